/**
 * Tenantry's data-plane client (`tenantry/client`): route each unit of work to its tenant's
 * placement, scope it to the tenant, and survive promotions and credential rotations. See
 * docs/data-plane.md.
 */

export type { ConnectionDescriptor } from '../domain/ports.js';
export { type ClientLog, type ClientOptions, type TenantDb, TenantryClient } from './client.js';
export { type DescriptorSource, httpDescriptorSource } from './descriptors.js';
export { CLIENT_ERROR_CODES, type ClientErrorCode, TenantryClientError } from './errors.js';
export { placementKey } from './pools.js';
export { type PasswordSource, secretsManagerPasswords } from './secrets.js';

import { type ClientOptions, TenantryClient } from './client.js';

/** A client; close it with `client.close()` when the application stops. */
export const createTenantryClient = (opts: ClientOptions): TenantryClient => new TenantryClient(opts);
