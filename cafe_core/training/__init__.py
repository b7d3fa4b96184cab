"""Training: one trainer for every stage (standard, adv, amr, defense), AMR-GMM for h and g, the live run of
the app's Train tab, torchrun helpers."""
