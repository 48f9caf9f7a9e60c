"""exchange-node: signed, encrypted notice exchange between authorities."""

__version__ = "0.1.0"
