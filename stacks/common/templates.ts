import { fileURLToPath } from 'node:url';
import { loadTemplates, type Templates } from '../../control-plane/src/lib/templates.js';

/** The repository's templates/, used when the engine passes no directory (tests, the CLI by hand). */
export const DEFAULT_TEMPLATES_DIR = fileURLToPath(new URL('../../templates/', import.meta.url));

/**
 * The tier catalog and tenant schema, read once per program run (outside any provider closure)
 * with the control plane's own loader and validation, from the directory the control plane uses
 * (TenantProgramInput.templatesDir). One reader, so the stacks and the control plane cannot
 * disagree on a migration's name or version.
 */
export function loadProgramTemplates(dir: string = DEFAULT_TEMPLATES_DIR): Templates {
  return loadTemplates(dir);
}
