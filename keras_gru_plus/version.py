"""Version of keras_gru_plus."""

__version__ = "0.1.0"
