/**
 * Installs what the aws target runs with, ahead of time (never during an operation: concurrent plugin
 * installs interfere, pulumi#22784): the pinned Pulumi CLI (PulumiCommand.install, from
 * get.pulumi.com) and the pinned aws plugin (installPlugin), as engine/pulumi/version.ts pins them.
 * Put `<root>/bin` first on the worker's PATH; every operation refuses another version.
 *
 *   npx tsx scripts/pulumi-install.ts [--root <dir>]
 *
 * Prints what it installed as JSON. It needs the internet; it has not run on our machines.
 */
import os from 'node:os';
import path from 'node:path';
import { LocalWorkspace, PulumiCommand } from '@pulumi/pulumi/automation/index.js';
import { Command } from 'commander';
// semver comes with @pulumi/pulumi (whose PulumiCommand takes its SemVer); not a direct dependency yet.
import { SemVer } from 'semver';
import { PINNED_VERSIONS } from '../control-plane/src/engine/pulumi/version.js';

const opts = new Command()
  .description('Install the pinned Pulumi CLI and aws plugin')
  .option(
    '--root <dir>',
    'where the CLI is installed',
    path.join(os.homedir(), '.pulumi', 'versions', PINNED_VERSIONS.cli),
  )
  .parse()
  .opts<{ root: string }>();

const command = await PulumiCommand.install({ version: new SemVer(PINNED_VERSIONS.cli), root: opts.root });
const workspace = await LocalWorkspace.create({ pulumiCommand: command });
await workspace.installPlugin('aws', `v${PINNED_VERSIONS.awsPlugin}`);
process.stdout.write(
  `${JSON.stringify({ cli: String(command.version), bin: path.join(opts.root, 'bin'), awsPlugin: PINNED_VERSIONS.awsPlugin })}\n`,
);
