"""Tests of cafe_core.io"""
