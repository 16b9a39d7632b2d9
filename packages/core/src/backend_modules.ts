import { listBackends } from "./engine";
import { BackendError, ValueError } from "./errors";
import { formatArg } from "./ops/validate";

/**
 * Imports backend packages by specifier (each registers its backend on import) and returns
 * the names of the backends they registered, for `--backend-module <specifier>` flags.
 * A specifier starting with "." or "/" is a file path from the working directory; anything
 * else is a package name, resolved by `load`, which callers pass as `(s) => import(s)` so
 * that it resolves from their own package. Throws BackendError naming the specifier when
 * the import fails or registers no backend.
 */
// A path as a file URL's: Windows' separators as "/", and "%", "#" and "?", which a URL reads as its own, escaped.
const fileUrlPath = (path: string): string => encodeURI(path.replace(/\\/g, "/")).replace(/[?#]/g, encodeURIComponent);

export async function importBackendModules(
  specifiers: readonly string[],
  load: (specifier: string) => Promise<unknown>,
): Promise<string[]> {
  // A single string was walked character by character ("backend module '.' could not be imported").
  if (!Array.isArray(specifiers) || !Array.from(specifiers).every((specifier) => typeof specifier === "string" && specifier !== "")) {
    throw new ValueError(`importBackendModules: specifiers must be an array of non-empty strings, got ${Array.isArray(specifiers) ? `[${Array.from(specifiers, formatArg).join(", ")}]` : formatArg(specifiers)}`);
  }
  if (typeof load !== "function") throw new ValueError(`importBackendModules: load must be a function such as (s) => import(s), got ${formatArg(load)}`);
  const added: string[] = [];
  for (const specifier of specifiers) {
    const before = new Set(listBackends());
    const cwd = (globalThis as { process?: { cwd(): string } }).process?.cwd();
    // A path is resolved from the working directory where there is one (Node); elsewhere it is passed as written.
    const target = cwd !== undefined && /^\.{0,2}[/\\]/.test(specifier) ? new URL(fileUrlPath(specifier), `file://${cwd[0] === "/" ? "" : "/"}${fileUrlPath(cwd)}/`).href : specifier;
    try {
      await load(target);
    } catch (error) {
      throw new BackendError(
        `backend module '${specifier}' could not be imported: ${error instanceof Error ? error.message : String(error)}`,
      );
    }
    const registered = listBackends().filter((name) => !before.has(name));
    if (registered.length === 0) {
      // A module imported before (by the program itself, or listed twice) comes from the module cache and registers nothing again.
      throw new BackendError(
        `backend module '${specifier}' was imported but registered no backend (it must call registerBackend on import; one imported before registers nothing again; registered now: ${[...before].join(", ")})`,
      );
    }
    added.push(...registered);
  }
  return added;
}
