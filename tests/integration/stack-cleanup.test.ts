import { describe, expect, it } from 'vitest';
import { dataPlaneNames } from '../../control-plane/src/dataplane/dataplane.js';
import { tenantObjectName } from '../../control-plane/src/domain/naming.js';
import { onboard, startStack, superQuery } from '../helpers/runtime.js';

describe('startStack().close()', () => {
  it('drops the control, data, silo-template and silo databases it created, and the stack roles', async () => {
    const s = await startStack();
    const { slug } = await onboard(s, 'silo');
    const silo = tenantObjectName(slug);
    const names = dataPlaneNames(s.dataDb);
    const owned = [s.controlDb, s.dataDb, names.siloTemplate, silo];
    const roles = [names.ownerRole, names.poolRole];
    const present = async () => ({
      databases: (
        await superQuery<{ datname: string }>(
          'postgres',
          'SELECT datname FROM pg_database WHERE datname = ANY($1::text[]) ORDER BY datname',
          [owned],
        )
      ).map((r) => r.datname),
      roles: (
        await superQuery<{ rolname: string }>(
          'postgres',
          'SELECT rolname FROM pg_roles WHERE rolname = ANY($1::text[]) ORDER BY rolname',
          [roles],
        )
      ).map((r) => r.rolname),
    });
    expect(await present()).toEqual({ databases: [...owned].sort(), roles: [...roles].sort() });
    await s.close();
    expect(await present()).toEqual({ databases: [], roles: [] });
  });
});
