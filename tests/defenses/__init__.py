"""Tests of cafe_core.defenses"""
