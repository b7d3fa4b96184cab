"""Images in: datasets by name (uint8 tensors, seeded validation split) and any user image turned into a model
input the way Fashion-MNIST was made."""
