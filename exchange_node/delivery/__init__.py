"""Delivery: the inbound half (open, check, store, receipt) and per-peer outbox workers."""
