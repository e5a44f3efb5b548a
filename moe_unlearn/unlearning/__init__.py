"""Exact unlearning: forget requests, drops, the job that carries them out, scrubbing, certificates
and the retrained-from-scratch oracle they are checked against."""
