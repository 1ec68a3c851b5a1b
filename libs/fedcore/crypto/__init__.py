"""Cryptography: Paillier, pairwise masking, secret sharing, PSI."""
