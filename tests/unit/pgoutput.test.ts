import { describe, expect, it } from 'vitest';
import { decode } from '../../control-plane/src/promotion/pgoutput.js';

/** Builds pgoutput v1 messages byte by byte, as the protocol documentation lays them out. */
const i8 = (n: number) => Buffer.from([n]);
const i16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
};
const i32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const str = (s: string) => Buffer.concat([Buffer.from(s), i8(0)]);
const ch = (c: string) => Buffer.from(c);
const tuple = (vals: (string | null | 'UNCHANGED')[]) =>
  Buffer.concat([
    i16(vals.length),
    ...vals.map((v) =>
      v === null
        ? ch('n')
        : v === 'UNCHANGED'
          ? ch('u')
          : Buffer.concat([ch('t'), i32(Buffer.byteLength(v)), Buffer.from(v)]),
    ),
  ]);

describe('pgoutput decoder', () => {
  it('decodes begin and commit with their LSNs', () => {
    const begin = Buffer.concat([ch('B'), i32(0), i32(0x16b3748), Buffer.alloc(8), i32(42)]);
    expect(decode(begin)).toEqual({ tag: 'begin', finalLsn: '0/16B3748', xid: 42 });
    const commit = Buffer.concat([ch('C'), i8(0), i32(1), i32(0x10), i32(1), i32(0x40), Buffer.alloc(8)]);
    expect(decode(commit)).toEqual({ tag: 'commit', commitLsn: '1/10', endLsn: '1/40' });
  });

  it('decodes a relation with its key columns', () => {
    const rel = Buffer.concat([
      ch('R'),
      i32(16384),
      str('pool'),
      str('users'),
      ch('d'),
      i16(3),
      i8(1),
      str('tenant_id'),
      i32(2950),
      i32(0xffffffff),
      i8(1),
      str('id'),
      i32(2950),
      i32(0xffffffff),
      i8(0),
      str('email'),
      i32(25),
      i32(0xffffffff),
    ]);
    expect(decode(rel)).toEqual({
      tag: 'relation',
      relation: {
        oid: 16384,
        schema: 'pool',
        name: 'users',
        columns: [
          { name: 'tenant_id', key: true, typeOid: 2950 },
          { name: 'id', key: true, typeOid: 2950 },
          { name: 'email', key: false, typeOid: 25 },
        ],
      },
    });
  });

  it('decodes insert, update with an old key, delete, nulls, unchanged TOAST and UTF-8', () => {
    expect(decode(Buffer.concat([ch('I'), i32(7), ch('N'), tuple(['a', null, 'é ✓'])]))).toEqual({
      tag: 'insert',
      relationOid: 7,
      newTuple: ['a', null, 'é ✓'],
    });
    expect(
      decode(
        Buffer.concat([ch('U'), i32(7), ch('K'), tuple(['k1', null]), ch('N'), tuple(['k2', 'UNCHANGED'])]),
      ),
    ).toEqual({
      tag: 'update',
      relationOid: 7,
      oldKey: ['k1', null],
      newTuple: ['k2', { unchanged: true }],
    });
    expect(decode(Buffer.concat([ch('U'), i32(7), ch('N'), tuple(['x'])]))).toMatchObject({
      tag: 'update',
      oldKey: null,
    });
    expect(decode(Buffer.concat([ch('D'), i32(7), ch('K'), tuple(['k1'])]))).toEqual({
      tag: 'delete',
      relationOid: 7,
      oldKey: ['k1'],
    });
  });

  it('decodes truncate and passes over messages it does not need', () => {
    expect(decode(Buffer.concat([ch('T'), i32(2), i8(0), i32(10), i32(11)]))).toEqual({
      tag: 'truncate',
      relationOids: [10, 11],
    });
    expect(decode(Buffer.concat([ch('Y'), i32(1), str('public'), str('t')]))).toEqual({
      tag: 'other',
      code: 'Y',
    });
  });

  it('refuses a tuple kind it does not know', () => {
    expect(() => decode(Buffer.concat([ch('I'), i32(7), ch('N'), i16(1), ch('b'), i32(0)]))).toThrow(
      /unsupported tuple kind b/,
    );
  });
});
