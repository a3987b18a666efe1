-- Up Migration
-- Logins whose password a sweep has verified against their stored secret (SCRAM StoredKey
-- recomputed from the secret): the role, the secret version, and a SHA-256 of the verifier that
-- matched. A later sweep that sees the same verifier and the same version skips the key derivation
-- (4096 PBKDF2 rounds per login); any change to either is checked again. Never the verifier itself.
CREATE TABLE drift_verified_credentials (
  role_name       text PRIMARY KEY,
  secret_name     text NOT NULL,
  secret_version  integer NOT NULL,
  verifier_sha256 text NOT NULL,
  verified_at     timestamptz NOT NULL DEFAULT now()
);
