/**
 * A decoder for the pgoutput logical-replication protocol (version 1, text tuples), as returned
 * by pg_logical_slot_peek_binary_changes(): one message per row. Only what promotion needs.
 */
export interface RelationColumn {
  name: string;
  key: boolean;
  typeOid: number;
}
export interface Relation {
  oid: number;
  schema: string;
  name: string;
  columns: RelationColumn[];
}
/** A tuple value: text, null, or unchanged-TOAST (the value was not sent). */
export type TupleValue = string | null | { unchanged: true };

export type PgOutputMessage =
  | { tag: 'begin'; finalLsn: string; xid: number }
  | { tag: 'commit'; commitLsn: string; endLsn: string }
  | { tag: 'relation'; relation: Relation }
  | { tag: 'insert'; relationOid: number; newTuple: TupleValue[] }
  | { tag: 'update'; relationOid: number; oldKey: TupleValue[] | null; newTuple: TupleValue[] }
  | { tag: 'delete'; relationOid: number; oldKey: TupleValue[] }
  | { tag: 'truncate'; relationOids: number[] }
  | { tag: 'other'; code: string };

const lsnText = (hi: number, lo: number) =>
  `${hi.toString(16).toUpperCase()}/${lo.toString(16).toUpperCase()}`;

class Reader {
  pos = 0;
  constructor(private readonly b: Buffer) {}
  u8() {
    return this.b.readUInt8(this.pos++);
  }
  i16() {
    const v = this.b.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  i32() {
    const v = this.b.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  u32() {
    const v = this.b.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  lsn() {
    const hi = this.u32();
    const lo = this.u32();
    return lsnText(hi, lo);
  }
  advance(n: number) {
    this.pos += n;
  }
  cstring() {
    const end = this.b.indexOf(0, this.pos);
    const s = this.b.toString('utf8', this.pos, end);
    this.pos = end + 1;
    return s;
  }
  bytes(n: number) {
    const s = this.b.toString('utf8', this.pos, this.pos + n);
    this.pos += n;
    return s;
  }
  tuple(): TupleValue[] {
    const n = this.i16();
    const out: TupleValue[] = [];
    for (let i = 0; i < n; i++) {
      const kind = String.fromCharCode(this.u8());
      if (kind === 'n') out.push(null);
      else if (kind === 'u') out.push({ unchanged: true });
      else if (kind === 't') out.push(this.bytes(this.i32()));
      else throw new Error(`pgoutput: unsupported tuple kind ${kind}`);
    }
    return out;
  }
}

export function decode(data: Buffer): PgOutputMessage {
  const r = new Reader(data);
  const code = String.fromCharCode(r.u8());
  switch (code) {
    case 'B': {
      const finalLsn = r.lsn();
      r.advance(8);
      return { tag: 'begin', finalLsn, xid: r.i32() };
    }
    case 'C': {
      r.advance(1);
      const commitLsn = r.lsn();
      return { tag: 'commit', commitLsn, endLsn: r.lsn() };
    }
    case 'R': {
      const oid = r.u32();
      const schema = r.cstring();
      const name = r.cstring();
      r.advance(1); // replica identity setting
      const n = r.i16();
      const columns: RelationColumn[] = [];
      for (let i = 0; i < n; i++) {
        const flags = r.u8();
        const colName = r.cstring();
        const typeOid = r.u32();
        r.advance(4);
        columns.push({ name: colName, key: (flags & 1) === 1, typeOid });
      }
      return { tag: 'relation', relation: { oid, schema, name, columns } };
    }
    case 'I': {
      const relationOid = r.u32();
      r.advance(1); // 'N'
      return { tag: 'insert', relationOid, newTuple: r.tuple() };
    }
    case 'U': {
      const relationOid = r.u32();
      let kind = String.fromCharCode(r.u8());
      let oldKey: TupleValue[] | null = null;
      if (kind === 'K' || kind === 'O') {
        oldKey = r.tuple();
        kind = String.fromCharCode(r.u8());
      }
      if (kind !== 'N') throw new Error('pgoutput: malformed update');
      return { tag: 'update', relationOid, oldKey, newTuple: r.tuple() };
    }
    case 'D': {
      const relationOid = r.u32();
      r.advance(1); // 'K' or 'O'
      return { tag: 'delete', relationOid, oldKey: r.tuple() };
    }
    case 'T': {
      const n = r.i32();
      r.advance(1);
      const relationOids: number[] = [];
      for (let i = 0; i < n; i++) relationOids.push(r.u32());
      return { tag: 'truncate', relationOids };
    }
    default:
      return { tag: 'other', code };
  }
}
