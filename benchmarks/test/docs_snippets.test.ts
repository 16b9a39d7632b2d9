/**
 * The TypeScript and JavaScript code blocks of README.md, docs/*.md and packages/*\/README.md stay true: each one
 * type-checks against the packages' exports, and the runnable ones run on the js backend.
 *
 * A block is read as it is, unless an HTML comment (invisible on GitHub and npm) right before it says otherwise:
 *
 *     <!-- snippet: typecheck-only, continues (needs a GPU)
 *     declare const model: Module;
 *     -->
 *
 * - the mode: `run` (the default: type-check, then run on js in a temporary working directory), `typecheck-only`
 *   (GPUs, distributed launches, checkpoints that are not here) or `skip` (signature listings, excerpts of package
 *   sources, config files of a new package), with the reason in the words after it;
 * - `continues`: the block is read after the previous checked block of the same file (its prelude and code);
 * - the lines after the first are a prelude, the declarations (or, to run, the values) the block takes from its
 *   surroundings.
 *
 * An HTML comment right after the block, `<!-- snippet-check ... -->`, holds code run after it (assertions on what
 * the prose says). The blocks are checked against the packages' sources, as vitest resolves them (no build needed).
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { getBackend, setBackend } from "@blocksparse/core";
import ts from "typescript";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";

const root = fileURLToPath(new URL("../../", import.meta.url));
const LANGS = new Set(["ts", "typescript", "tsx", "js", "javascript"]);
const MODES = ["run", "typecheck-only", "skip"] as const;
type Mode = (typeof MODES)[number];

interface Snippet {
  /** `docs/nn.md:220`: the file and the line of the opening fence. */
  where: string;
  file: string;
  /** The line of the block's first line of code in the file (1-based). */
  line: number;
  mode: Mode;
  continues: boolean;
  prelude: string;
  body: string;
  check: string;
}

function markdownFiles(): string[] {
  const docs = readdirSync(join(root, "docs")).filter((f) => f.endsWith(".md")).map((f) => `docs/${f}`);
  const packages = readdirSync(join(root, "packages"))
    .map((p) => `packages/${p}/README.md`)
    .filter((f) => existsSync(join(root, f)));
  return ["README.md", ...docs.sort(), ...packages.sort()];
}

/** An HTML comment's text (without `<!--` and `-->`) ending at line `end` (or starting at `start`), else null. */
function commentEndingAt(lines: string[], end: number): string | null {
  if (end < 0 || !lines[end].trim().endsWith("-->")) return null;
  for (let i = end; i >= 0; i--) {
    const at = lines[i].indexOf("<!--");
    if (at >= 0) return [lines[i].slice(at + 4), ...lines.slice(i + 1, end + 1)].join("\n").replace(/-->\s*$/, "");
  }
  return null;
}

function commentStartingAt(lines: string[], start: number): string | null {
  if (start >= lines.length || !lines[start].trim().startsWith("<!--")) return null;
  for (let i = start; i < lines.length; i++) {
    if (lines[i].trim().endsWith("-->")) {
      return lines.slice(start, i + 1).join("\n").replace(/^\s*<!--/, "").replace(/-->\s*$/, "");
    }
  }
  return null;
}

function snippetsOf(file: string): Snippet[] {
  const lines = readFileSync(join(root, file), "utf8").split("\n");
  const out: Snippet[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(\w*)\s*$/.exec(lines[i]);
    if (!open) continue;
    const indent = open[1].length;
    let close = i + 1;
    while (close < lines.length && !/^\s*```\s*$/.test(lines[close])) close++;
    if (LANGS.has(open[2])) {
      const where = `${file}:${i + 1}`;
      let before = i - 1;
      while (before >= 0 && lines[before].trim() === "") before--;
      const directive = commentEndingAt(lines, before);
      let mode: Mode = "run";
      let continues = false;
      let prelude = "";
      if (directive !== null && /^\s*snippet:/.test(directive)) {
        const [head, ...rest] = directive.replace(/^\s*snippet:/, "").split("\n");
        const words = head.trim().split(/[\s,]+/);
        if (!(MODES as readonly string[]).includes(words[0])) throw new Error(`${where}: unknown snippet mode '${words[0]}' (${MODES.join(", ")})`);
        mode = words[0] as Mode;
        continues = words[1] === "continues";
        prelude = rest.join("\n");
      }
      let after = close + 1;
      while (after < lines.length && lines[after].trim() === "") after++;
      const checkComment = commentStartingAt(lines, after);
      const check = checkComment !== null && /^\s*snippet-check\b/.test(checkComment) ? checkComment.replace(/^\s*snippet-check/, "") : "";
      const body = lines
        .slice(i + 1, close)
        .map((l) => l.slice(Math.min(indent, l.length - l.trimStart().length)))
        .join("\n");
      out.push({ where, file, line: i + 2, mode, continues, prelude, body, check });
    }
    i = close;
  }
  return out;
}

const snippets = markdownFiles().flatMap(snippetsOf);

/** Each checked snippet's module source: the blocks it continues, its prelude, its code and its checks. */
const sources = new Map<Snippet, string>();
/** The line (0-based) of each snippet's code in its module source. */
const bodyStart = new Map<Snippet, number>();
{
  const previous = new Map<string, { code: string; mode: Mode }>();
  for (const s of snippets) {
    if (s.mode === "skip") continue;
    const before = s.continues ? previous.get(s.file) : { code: "", mode: s.mode };
    if (before === undefined) throw new Error(`${s.where}: 'continues' but no checked block comes before it in ${s.file}`);
    if (s.mode === "run" && before.mode !== "run") throw new Error(`${s.where}: runs, but continues a block that is ${before.mode}`);
    const head = [before.code, `// ${s.where}: prelude`, s.prelude, `// ${s.where}`].join("\n");
    bodyStart.set(s, head.split("\n").length);
    const code = `${head}\n${s.body}`;
    previous.set(s.file, { code, mode: s.mode });
    sources.set(s, [code, `// ${s.where}: check`, s.check, "export {};", ""].join("\n"));
  }
}

// Two levels below the root, as a package is: `../../tsup.shared` in a new package's config resolves as it would there.
const virtualDir = join(root, "docs", "__snippets__");
const fileName = (s: Snippet) => `${s.where.replace(/[/.:]/g, "_")}.ts`;

/** Type-checks every snippet in one program, against the packages' sources (as tsconfig.docs.json maps them). */
function typecheck(): Map<Snippet, string[]> {
  const docsConfig = ts.readConfigFile(join(root, "tsconfig.docs.json"), ts.sys.readFile);
  const { options } = ts.parseJsonConfigFileContent(docsConfig.config, ts.sys, root);
  const compilerOptions: ts.CompilerOptions = {
    ...options,
    noEmit: true,
    declaration: false,
    sourceMap: false,
    moduleDetection: ts.ModuleDetectionKind.Force,
    typeRoots: [join(root, "node_modules", "@types")],
  };
  const virtual = new Map([...sources].map(([s, text]) => [join(virtualDir, fileName(s)), text]));
  const host = ts.createCompilerHost(compilerOptions);
  const { fileExists, readFile, getSourceFile } = host;
  host.fileExists = (f) => virtual.has(f) || fileExists.call(host, f);
  host.readFile = (f) => virtual.get(f) ?? readFile.call(host, f);
  host.getSourceFile = (f, language, ...rest) => {
    const text = virtual.get(f);
    return text === undefined ? getSourceFile.call(host, f, language, ...rest) : ts.createSourceFile(f, text, language, true);
  };
  const program = ts.createProgram([...virtual.keys()], compilerOptions, host);
  const result = new Map<Snippet, string[]>();
  for (const [s] of sources) {
    const sourceFile = program.getSourceFile(join(virtualDir, fileName(s)))!;
    const diagnostics = [...program.getSyntacticDiagnostics(sourceFile), ...program.getSemanticDiagnostics(sourceFile)];
    result.set(
      s,
      diagnostics.map((d) => {
        const { line } = sourceFile.getLineAndCharacterOfPosition(d.start ?? 0);
        const inBody = line - bodyStart.get(s)!;
        const at = inBody >= 0 && inBody < s.body.split("\n").length ? `${s.file}:${s.line + inBody}` : `line ${line + 1} of the module below`;
        return `${at}: ${ts.flattenDiagnosticMessageText(d.messageText, "\n")}\n  ${sourceFile.text.split("\n")[line]}`;
      }),
    );
  }
  return result;
}

describe("documentation snippets", () => {
  it("finds the code blocks", () => {
    expect(snippets.length).toBeGreaterThan(30);
  });

  const diagnostics = typecheck();
  for (const [s] of sources) {
    it(`${s.where} type-checks`, () => {
      // A fragment by design takes a prelude, or `typecheck-only` / `skip`: see the comment at the top of this file.
      expect(diagnostics.get(s), `${s.where}, as checked:\n${sources.get(s)}`).toEqual([]);
    });
  }

  const runnable = [...sources.keys()].filter((s) => s.mode === "run");
  // Preludes copy test fixtures from the repository (a tiny GPT-2 checkpoint) into their working directory.
  process.env.DOCS_REPO_ROOT = root;
  const workDir = mkdtempSync(join(tmpdir(), "blocksparse-docs-"));
  const startDir = process.cwd();
  beforeAll(() => setBackend("js"));
  afterAll(() => {
    process.chdir(startDir);
    rmSync(workDir, { recursive: true, force: true });
  });
  for (const s of runnable) {
    it(`${s.where} runs on js`, async () => {
      const dir = mkdtempSync(join(workDir, "run-"));
      const path = join(dir, fileName(s));
      writeFileSync(path, sources.get(s)!);
      const log = vi.spyOn(console, "log").mockImplementation(() => {});
      process.chdir(dir);
      try {
        await import(/* @vite-ignore */ path);
      } finally {
        process.chdir(startDir);
        log.mockRestore();
      }
      expect(getBackend()).toBe("js");
    });
  }
});
