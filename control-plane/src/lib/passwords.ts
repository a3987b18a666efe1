import { randomBytes } from 'node:crypto';

/** A database password: 24 random bytes, base64url (what a connection string carries unescaped). */
export const generatePassword = (): string => randomBytes(24).toString('base64url');
