import dns from 'node:dns';
import net from 'node:net';

/**
 * Where a webhook may send (SSRF): never to a private, loopback, link-local or otherwise special
 * address unless an operator allowed its network (TENANTRY_WEBHOOK_ALLOWED_NETWORKS). Checked when a
 * webhook is registered, and again on the address each delivery actually connects to (a name that
 * resolved to a public address at registration may point inside later: DNS rebinding).
 */

/** Networks no webhook reaches by default (IANA special-purpose registries, and cloud metadata). */
const SPECIAL_V4 = [
  ['0.0.0.0', 8, 'this network'],
  ['10.0.0.0', 8, 'private'],
  ['100.64.0.0', 10, 'shared address space (carrier-grade NAT)'],
  ['127.0.0.0', 8, 'loopback'],
  ['169.254.0.0', 16, 'link-local (cloud metadata lives here)'],
  ['172.16.0.0', 12, 'private'],
  ['192.0.0.0', 24, 'IETF protocol assignments'],
  ['192.0.2.0', 24, 'documentation'],
  ['192.168.0.0', 16, 'private'],
  ['198.18.0.0', 15, 'benchmarking'],
  ['198.51.100.0', 24, 'documentation'],
  ['203.0.113.0', 24, 'documentation'],
  ['224.0.0.0', 4, 'multicast'],
  ['240.0.0.0', 4, 'reserved'],
] as const;
const SPECIAL_V6 = [
  ['::', 128, 'unspecified'],
  ['::1', 128, 'loopback'],
  ['64:ff9b::', 96, 'NAT64'],
  ['100::', 64, 'discard'],
  ['2001:db8::', 32, 'documentation'],
  ['fc00::', 7, 'unique local (private)'],
  ['fe80::', 10, 'link-local'],
  ['ff00::', 8, 'multicast'],
] as const;

/** `10.0.0.0/8` → its parts, or null when it is not a CIDR (a bare address counts as a /32 or /128). */
export function parseCidr(cidr: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | null {
  const [address = '', bits] = cidr.split('/');
  const v = net.isIP(address);
  if (v === 0) return null;
  const max = v === 4 ? 32 : 128;
  const prefix = bits === undefined ? max : Number(bits);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max || (bits !== undefined && !/^\d+$/.test(bits)))
    return null;
  return { address, prefix, family: v === 4 ? 'ipv4' : 'ipv6' };
}

/** An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) as the IPv4 address it is. */
function unmap(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m?.[1] ?? address;
}

export class AddressPolicy {
  private readonly special = new net.BlockList();
  private readonly allowed = new net.BlockList();
  private readonly names: { list: net.BlockList; why: string }[] = [];

  constructor(allowedNetworks: readonly string[] = []) {
    for (const [a, p, why] of SPECIAL_V4) this.named(a, p, 'ipv4', why);
    for (const [a, p, why] of SPECIAL_V6) this.named(a, p, 'ipv6', why);
    for (const cidr of allowedNetworks) {
      const c = parseCidr(cidr);
      if (!c) throw new Error(`not a CIDR: ${cidr}`);
      this.allowed.addSubnet(c.address, c.prefix, c.family);
    }
  }

  private named(address: string, prefix: number, family: 'ipv4' | 'ipv6', why: string): void {
    this.special.addSubnet(address, prefix, family);
    const list = new net.BlockList();
    list.addSubnet(address, prefix, family);
    this.names.push({ list, why });
  }

  /** Why a webhook may not connect to `address`, or null when it may. */
  refusal(address: string): string | null {
    const a = unmap(address);
    const family = net.isIP(a) === 6 ? 'ipv6' : 'ipv4';
    if (net.isIP(a) === 0) return `${address} is not an IP address`;
    if (this.allowed.check(a, family)) return null;
    if (!this.special.check(a, family)) return null;
    const why = this.names.find((n) => n.list.check(a, family))?.why ?? 'special-purpose';
    return `${a} is a ${why} address; webhooks may not reach it unless TENANTRY_WEBHOOK_ALLOWED_NETWORKS allows its network`;
  }

  /**
   * Why a webhook URL is refused, or null: http(s) only, no credentials in it, and every address its
   * host resolves to allowed.
   */
  async urlRefusal(raw: string): Promise<string | null> {
    let u: URL;
    try {
      u = new URL(raw);
    } catch {
      return 'the URL is not valid';
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') return 'the URL must be http or https';
    if (u.username || u.password) return 'the URL must not carry credentials';
    const host = u.hostname.replace(/^\[|\]$/g, '');
    let addresses: string[];
    if (net.isIP(host)) addresses = [host];
    else {
      try {
        addresses = (await dns.promises.lookup(host, { all: true, verbatim: true })).map((a) => a.address);
      } catch {
        return `the host ${host} does not resolve`;
      }
    }
    for (const a of addresses) {
      const why = this.refusal(a);
      if (why) return why;
    }
    return null;
  }

  /**
   * A `lookup` for node:http(s) that refuses a connection to any address this policy refuses: the
   * check happens on the address actually connected to.
   */
  lookup(): net.LookupFunction {
    return ((hostname: string, options: dns.LookupOptions, callback: (...args: unknown[]) => void) => {
      dns.lookup(hostname, { ...options, all: true, verbatim: true }, (err, addresses) => {
        if (err) return callback(err);
        const list = addresses as dns.LookupAddress[];
        for (const a of list) {
          const why = this.refusal(a.address);
          if (why) return callback(Object.assign(new Error(why), { code: 'WEBHOOK_ADDRESS_REFUSED' }));
        }
        if (options.all) return callback(null, list);
        const first = list[0];
        if (!first)
          return callback(Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' }));
        callback(null, first.address, first.family);
      });
    }) as unknown as net.LookupFunction;
  }
}
