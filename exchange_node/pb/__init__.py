# Generated from proto/ by proto/generate.py. Do not edit.
"""Generated protobuf modules of the exchange.v1 wire schema."""
