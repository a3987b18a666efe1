import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { generateToken, hashToken, tokenKey } from '../../control-plane/src/db/tokens.js';

describe('hashToken', () => {
  it("is the token's SHA-256, as every stored token hash was written", () => {
    // Stored hashes were written with a Hash object; the one-shot crypto.hash must give the same bytes.
    for (const token of [generateToken(), generateToken(), 'tnt_short']) {
      expect(hashToken(token).equals(createHash('sha256').update(token).digest())).toBe(true);
      expect(hashToken(token)).toHaveLength(32);
      expect(tokenKey(token)).toBe(hashToken(token).toString('base64'));
    }
  });
});
