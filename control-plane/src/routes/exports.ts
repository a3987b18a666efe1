import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { TenantryError } from '../domain/errors.js';
import { actorOf } from '../plugins/auth.js';
import {
  AUTH_ERRORS,
  errors,
  OperationSchema,
  Page,
  Slug,
  security,
  TenantSchema,
  TierT,
} from './schemas.js';
import { EXPORT_ID_PATTERN } from './tenants.js';

const ExportId = Type.String({ pattern: EXPORT_ID_PATTERN, description: 'an export id (exp_…)' });

export const ExportSchema = Type.Object(
  {
    id: Type.String(),
    tenantId: Type.String({ format: 'uuid' }),
    tenantSlug: Type.String(),
    tier: TierT,
    operationId: Type.String({
      description: 'the operation writing it: an `export`, or an offboarding (final)',
    }),
    status: Type.Union(['pending', 'ready', 'failed', 'expired'].map((s) => Type.Literal(s))),
    final: Type.Boolean({ description: "an offboarding's last export (?export=true)" }),
    bytes: Type.Union([Type.Integer(), Type.Null()], { description: "the archive's size (gzip)" }),
    sha256: Type.Union([Type.String(), Type.Null()], {
      description: "the archive file's SHA-256 (what a download carries)",
    }),
    manifest: Type.Union(
      [
        Type.Object({
          format: Type.String(),
          version: Type.Integer(),
          exportId: Type.String(),
          tenant: Type.Object({ id: Type.String(), slug: Type.String(), tier: Type.String() }),
          schemaVersion: Type.Integer({ description: 'the tenant schema template version of the rows' }),
          createdAt: Type.String({ format: 'date-time' }),
          tables: Type.Array(
            Type.Object({
              name: Type.String(),
              columns: Type.Array(Type.String()),
              rows: Type.Integer(),
              bytes: Type.Integer(),
              sha256: Type.String({
                description: "SHA-256 of the table's COPY text (without tenant_id, in key order)",
              }),
            }),
          ),
        }),
        Type.Null(),
      ],
      { description: 'what the archive holds, once ready' },
    ),
    error: Type.Union([Type.String(), Type.Null()]),
    createdBy: Type.Union([Type.String(), Type.Null()]),
    createdAt: Type.String({ format: 'date-time' }),
    readyAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
    expiresAt: Type.String({
      format: 'date-time',
      description: 'when the archive is deleted (its record stays, expired)',
    }),
  },
  { description: "a tenant's data in one archive (docs/lifecycle.md, Export format)" },
);

/** Exports of a tenant's data and their archives (services/exports.ts; docs/lifecycle.md). */
const exportRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const svc = app.services.exports;

  app.post(
    '/v1/tenants/:slug/exports',
    {
      config: { permission: 'tenants:export' },
      schema: {
        operationId: 'exportTenant',
        summary: "Export a tenant's data to one archive",
        description:
          "An `export` operation streams every table of the tenant's placement (its rows only, whatever its tier) with COPY into one archive, with a manifest of the schema version, row counts and a SHA-256 per table. " +
          "On the local target the archive is in the data directory; on the aws target in the S3 bucket TENANTRY_EXPORT_BUCKET, encrypted with the tenant's KMS key (pool and bridge; without the bucket, or for a silo: 422 EXPORT_NOT_AVAILABLE_ON_TARGET). export.ready is sent once it is written.",
        tags: ['exports'],
        security,
        params: Type.Object({ slug: Slug }),
        response: {
          202: Type.Object({ tenant: TenantSchema, operation: OperationSchema, export: ExportSchema }),
          ...errors(
            'VALIDATION_FAILED',
            ...AUTH_ERRORS,
            'TENANT_NOT_FOUND',
            'TENANT_NOT_ACTIVE',
            'OPERATION_IN_PROGRESS',
            'EXPORT_NOT_AVAILABLE_ON_TARGET',
          ),
        },
      },
    },
    async (request, reply) => {
      const out = await svc.start({ actor: actorOf(request), requestId: request.id }, request.params.slug);
      return reply.status(202).send(out);
    },
  );

  app.get(
    '/v1/tenants/:slug/exports',
    {
      config: { permission: 'tenants:read' },
      schema: {
        operationId: 'listTenantExports',
        summary: "A tenant's exports, newest first",
        tags: ['exports'],
        security,
        params: Type.Object({ slug: Slug }),
        querystring: Type.Object({
          limit: Type.Integer({ minimum: 1, maximum: 200, default: 50 }),
          cursor: Type.Optional(ExportId),
        }),
        response: {
          200: Page(ExportSchema),
          ...errors('VALIDATION_FAILED', ...AUTH_ERRORS, 'TENANT_NOT_FOUND'),
        },
      },
    },
    async (request) => {
      const { limit, cursor } = request.query;
      const items = await svc.list(request.params.slug, {
        limit: limit + 1,
        ...(cursor ? { before: cursor } : {}),
      });
      const page = items.slice(0, limit);
      return { items: page, nextCursor: items.length > limit ? (page.at(-1)?.id ?? null) : null };
    },
  );

  app.get(
    '/v1/exports/:id',
    {
      config: { permission: 'tenants:read' },
      schema: {
        operationId: 'getExport',
        summary: 'One export: its status and manifest',
        tags: ['exports'],
        security,
        params: Type.Object({ id: ExportId }),
        response: { 200: ExportSchema, ...errors('VALIDATION_FAILED', ...AUTH_ERRORS, 'EXPORT_NOT_FOUND') },
      },
    },
    async (request) => svc.get(request.params.id),
  );

  app.get(
    '/v1/exports/:id/download',
    {
      config: { permission: 'tenants:export' },
      schema: {
        operationId: 'downloadExport',
        summary: "Download an export's archive (audited)",
        description:
          "Streams the archive (gzip; docs/lifecycle.md describes its frames). `x-content-sha256` is the file's SHA-256. Every download is audited before the first byte is sent.",
        tags: ['exports'],
        security,
        params: Type.Object({ id: ExportId }),
        response: {
          200: {
            description: 'the archive',
            content: { 'application/gzip': { schema: Type.String({ format: 'binary' }) } },
          },
          ...errors('VALIDATION_FAILED', ...AUTH_ERRORS, 'EXPORT_NOT_FOUND', 'EXPORT_NOT_READY'),
        },
      },
    },
    async (request, reply) => {
      const out = await svc.download({ actor: actorOf(request), requestId: request.id }, request.params.id);
      const e = out.export;
      if (e.bytes === null || e.sha256 === null)
        throw new TenantryError('EXPORT_NOT_READY', `export ${e.id} is not ready`);
      reply
        .header('content-type', 'application/gzip')
        .header('content-length', String(e.bytes))
        .header('content-disposition', `attachment; filename="${e.tenantSlug}-${e.id}.tenantry.gz"`)
        .header('x-content-sha256', e.sha256)
        .header('cache-control', 'no-store');
      // A stream, which Fastify sends as it is (the schema documents the bytes; it serializes nothing here).
      return reply.send(out.stream as unknown as string);
    },
  );
};

export default exportRoutes;
