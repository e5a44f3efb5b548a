"""Proof of forgetting: membership inference, canary exposure and extraction, router stability."""
