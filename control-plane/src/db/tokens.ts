import { createHash, randomBytes } from 'node:crypto';
import type { Role } from '../domain/auth.js';
import { newTokenId } from '../domain/ids.js';
import type { Queryable } from '../providers/postgres/sql.js';

/** Tokens are 256 random bits, so a single SHA-256 is a sound at-rest hash (no password stretching needed). */
export const hashToken = (token: string): Buffer => createHash('sha256').update(token).digest();
export const generateToken = (): string => `tnt_${randomBytes(32).toString('base64url')}`;

export interface TokenInfo {
  id: string;
  name: string;
  role: Role;
  createdAt: string;
  revokedAt: string | null;
}

interface Row {
  id: string;
  name: string;
  role: Role;
  created_at: Date;
  revoked_at: Date | null;
}
const toInfo = (r: Row): TokenInfo => ({
  id: r.id,
  name: r.name,
  role: r.role,
  createdAt: r.created_at.toISOString(),
  revokedAt: r.revoked_at ? r.revoked_at.toISOString() : null,
});

export async function createToken(
  q: Queryable,
  input: { name: string; role: Role; createdBy: string | null; token?: string },
): Promise<{ info: TokenInfo; token: string }> {
  const token = input.token ?? generateToken();
  const { rows } = await q.query<Row & Record<string, unknown>>(
    `INSERT INTO api_tokens (id, name, role, token_hash, created_by) VALUES ($1, $2, $3, $4, $5) RETURNING *`,
    [newTokenId(), input.name, input.role, hashToken(token), input.createdBy],
  );
  return { info: toInfo(rows[0] as Row), token };
}

export async function listTokens(q: Queryable): Promise<TokenInfo[]> {
  const { rows } = await q.query<Row & Record<string, unknown>>(
    'SELECT * FROM api_tokens ORDER BY created_at, id',
  );
  return rows.map((r) => toInfo(r as Row));
}

export async function revokeToken(q: Queryable, id: string): Promise<TokenInfo | null> {
  const { rows } = await q.query<Row & Record<string, unknown>>(
    'UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING *',
    [id],
  );
  return rows[0] ? toInfo(rows[0] as Row) : null;
}

export async function tokenByHash(q: Queryable, hash: Buffer): Promise<TokenInfo | null> {
  const { rows } = await q.query<Row & Record<string, unknown>>(
    'SELECT * FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL',
    [hash],
  );
  return rows[0] ? toInfo(rows[0] as Row) : null;
}

export async function hasAnyAdmin(q: Queryable): Promise<boolean> {
  const { rows } = await q.query(
    `SELECT 1 FROM api_tokens WHERE role = 'admin' AND revoked_at IS NULL LIMIT 1`,
  );
  return rows.length > 0;
}

export async function tokenHashExists(q: Queryable, token: string): Promise<boolean> {
  const { rows } = await q.query('SELECT 1 FROM api_tokens WHERE token_hash = $1', [hashToken(token)]);
  return rows.length > 0;
}
