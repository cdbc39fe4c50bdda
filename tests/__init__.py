"""Tests of keras_gru_plus."""
