import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';

/**
 * Where the CLI finds its server and token: TENANTRY_URL and TENANTRY_TOKEN when set, else the profile
 * `tenantry login` wrote (`$XDG_CONFIG_HOME/tenantry/config.yaml`, or `~/.config/tenantry/config.yaml`),
 * mode 600 in a mode 700 directory. The token never comes from the command line, where `ps` shows it.
 * The CLI is a separate program from the server: this is the one place it reads its environment.
 */

export interface Profile {
  url: string;
  token: string;
}

interface ProfileFile {
  profiles?: Record<string, Partial<Profile>>;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

export const DEFAULT_PROFILE = 'default';

export function configDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME || path.join(env.HOME || os.homedir(), '.config');
  return path.join(base, 'tenantry');
}

export const configFile = (env: NodeJS.ProcessEnv = process.env): string =>
  path.join(configDir(env), 'config.yaml');

function readFile(file: string): ProfileFile {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new ConfigError(`cannot read ${file}: ${(e as Error).message}`);
  }
  const parsed = YAML.parse(text) as unknown;
  return parsed && typeof parsed === 'object' ? (parsed as ProfileFile) : {};
}

/** A profile file others can read leaks its token: it is refused until its mode is fixed. */
function assertPrivate(file: string): void {
  const mode = fs.statSync(file).mode & 0o777;
  if (mode & 0o077) {
    throw new ConfigError(
      `${file} is readable by others (mode ${mode.toString(8)}); run: chmod 600 ${file} (or log in again)`,
    );
  }
}

/** The profile in use: `--profile`, else TENANTRY_PROFILE, else `default`. */
export const profileNameOf = (flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string =>
  flag ?? env.TENANTRY_PROFILE ?? DEFAULT_PROFILE;

/** The server `login` stores: `--url`, else TENANTRY_URL, else the profile's, else the local default. */
export function loginUrl(
  flag: string | undefined,
  name: string,
  env: NodeJS.ProcessEnv = process.env,
): string {
  const url = flag ?? env.TENANTRY_URL ?? readFile(configFile(env)).profiles?.[name]?.url ?? LOCAL_URL;
  return url.replace(/\/+$/, '');
}

/** `npm start`'s address. */
export const LOCAL_URL = 'http://127.0.0.1:3000';

/** The server and token to use: the environment first, then the profile. */
export function resolveProfile(name: string | undefined, env: NodeJS.ProcessEnv = process.env): Profile {
  const profileName = profileNameOf(name, env);
  const file = configFile(env);
  const needFile = !env.TENANTRY_URL || !env.TENANTRY_TOKEN;
  let stored: Partial<Profile> = {};
  if (needFile && fs.existsSync(file)) {
    assertPrivate(file);
    stored = readFile(file).profiles?.[profileName] ?? {};
  }
  const url = env.TENANTRY_URL || stored.url;
  const token = env.TENANTRY_TOKEN || stored.token;
  if (!url || !token) {
    throw new ConfigError(
      `no ${!url ? 'server URL' : 'token'} for profile "${profileName}": run \`tenantry login\`, or set TENANTRY_URL and TENANTRY_TOKEN`,
    );
  }
  return { url: url.replace(/\/+$/, ''), token };
}

/**
 * Writes (or replaces) a profile. The file is created mode 600 and re-moded if it existed, in a
 * directory of mode 700; it is written whole to a temporary file first, then renamed into place.
 */
export function saveProfile(name: string, profile: Profile, env: NodeJS.ProcessEnv = process.env): string {
  const dir = configDir(env);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = configFile(env);
  const current = readFile(file);
  const next: ProfileFile = { ...current, profiles: { ...(current.profiles ?? {}), [name]: profile } };
  writePrivate(file, next);
  return file;
}

/** Removes a profile; says whether there was one. */
export function removeProfile(name: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const file = configFile(env);
  const current = readFile(file);
  if (!current.profiles?.[name]) return false;
  const { [name]: _gone, ...rest } = current.profiles;
  writePrivate(file, { ...current, profiles: rest });
  return true;
}

function writePrivate(file: string, content: ProfileFile): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, YAML.stringify(content), { mode: 0o600 });
  fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, file);
}
