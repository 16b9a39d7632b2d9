/**
 * The bench pipeline: `pnpm bench` (all suites on the best backend found), `--quick` for CI.
 * Every benchmark is validated against a float64 reference, then timed; the run is written
 * as JSON plus a markdown report with SVG charts under out/<machine>/ (ignored by git), or
 * under the committed results/<machine>/ with --update-results (or BENCH_UPDATE=1).
 */
import { getBackend, getBackendInstance, importBackendModules, } from "@blocksparse/core";
import { describeMachine, gitState, packageVersions, repoRoot } from "./machine";
import type { TimingPlan } from "./measure";
import { Progress } from "./progress";
import type { BenchRecord, FailureRecord, RunRecord } from "./record";
import { plural, writeIndex, writeRun } from "./report";
import { type CliSpec, describeFailure, FlagError, flagItems, outputDirectory, parseFlags, usageText } from "./flags";
import { startBackend } from "./start_backend";
import { formatSuite } from "./suites/format";
import { kernelsSuite } from "./suites/kernels";
import { trainSuite } from "./suites/train";
import type { Suite, SuiteConfig } from "./suites/types";
import type { BenchDType } from "./validate";
import { join } from "node:path";

const SUITES: Suite[] = [formatSuite, kernelsSuite, trainSuite];
const DTYPES: BenchDType[] = ["float32", "float16", "bfloat16"];

const CLI = {
  usage: "pnpm bench [flags]",
  summary: "Every suite validated against a float64 reference, then timed; JSON per run and a markdown report with SVG charts.",
  flags: {
    quick: { type: "boolean", default: false, description: "fewer cases and repeats (CI)" },
    backend: { type: "string", default: "auto", description: "auto, js, cpu, cuda, or a backend NAME a --backend-module registered" },
    "backend-module": { type: "string", multiple: true, description: "import a backend package (name or path) before picking the backend" },
    suites: { type: "string", description: `comma-separated suites: ${SUITES.map((s) => s.name).join(", ")}`, defaultText: "all" },
    dtypes: { type: "string", description: `comma-separated dtypes: ${DTYPES.join(", ")}`, defaultText: "all three on cuda (bfloat16 with --quick), float32 elsewhere" },
    out: { type: "string", description: "directory for the run's JSON and report", defaultText: "benchmarks/out/, not committed" },
    "update-results": {
      type: "boolean",
      default: process.env.BENCH_UPDATE === "1",
      description: "write the committed benchmarks/results/ instead of benchmarks/out/",
      defaultText: "off; on with BENCH_UPDATE=1",
    },
  },
} satisfies CliSpec;
const USAGE = usageText(CLI);

function list<T extends string>(value: string | undefined, allowed: readonly T[], what: string): T[] | undefined {
  if (value === undefined) return undefined;
  const items = flagItems(value, what);
  for (const item of items) {
    if (!(allowed as readonly string[]).includes(item)) throw new FlagError(`--${what}: unknown "${item}", expected some of ${allowed.join(", ")}`);
  }
  return items as T[];
}


async function main(): Promise<void> {
  const { values } = parseFlags(CLI);
  const added = await importBackendModules(values["backend-module"] ?? [], (specifier) => import(specifier)).catch((error: unknown) => {
    throw new FlagError(`--backend-module: ${error instanceof Error ? error.message : String(error)}`);
  });
  const known = ["auto", "js", "cpu", "cuda", ...added];
  if (!known.includes(values.backend)) throw new FlagError(`--backend: expected ${known.join(", ")}, got "${values.backend}"`);
  const quick = values.quick;
  const suiteNames = list(values.suites, SUITES.map((s) => s.name), "suites") ?? SUITES.map((s) => s.name);
  if (values.out !== undefined && values["update-results"]) throw new FlagError(`--out and --update-results${process.env.BENCH_UPDATE === "1" ? " (on with BENCH_UPDATE=1)" : ""}: pick one`);
  // Checked before the backend starts (the default depends on the backend that starts).
  const dtypesGiven = list(values.dtypes, DTYPES, "dtypes");
  const outDir = outputDirectory(values.out ?? join(repoRoot, "benchmarks", values["update-results"] ? "results" : "out"));
  const started = await startBackend(values.backend);
  const large = started.backend === "cuda";
  // On a CPU the half types are emulated: float32 tells the story in a fraction of the time.
  const dtypes = dtypesGiven ?? (large ? (quick ? ["bfloat16"] : ["bfloat16", "float16", "float32"]) : ["float32"]);
  const plan: TimingPlan = large
    ? { warmup: 3, minRepeats: 10, maxRepeats: 50, budgetMs: 150, minSampleMs: 5 }
    : quick
      ? { warmup: 1, minRepeats: 3, maxRepeats: 10, budgetMs: 150, minSampleMs: 10 }
      : { warmup: 1, minRepeats: 5, maxRepeats: 20, budgetMs: 500, minSampleMs: 20 };
  const backendInstance = getBackendInstance();
  const config: SuiteConfig = {
    backend: started.backend,
    quick,
    large,
    dtypes,
    plan,
    synchronize: started.synchronize,
    setPoison: (enabled) => {
      backendInstance.poisonAllocations = enabled;
    },
  };

  const machine = describeMachine(started.gpu);
  const suites = SUITES.filter((s) => suiteNames.includes(s.name));
  const groups = suites.flatMap((suite) => suite.plan(config));
  const total = groups.reduce((n, g) => n + g.cases.length, 0);
  const progress = new Progress(total);
  const results: BenchRecord[] = [];
  const failures: FailureRecord[] = [];
  const startedAt = performance.now();
  process.stderr.write(`${machine.name}: ${plural(total, "benchmark")} on ${getBackend()} (${quick ? "quick" : "default"} mode, ${dtypes.join(", ")})\n`);
  const { commit, dirty } = gitState();
  const machineDir = join(outDir, machine.name);
  // Written after every group, so that a run cut short still leaves its figures.
  const save = (): string => {
    const run: RunRecord = {
      schemaVersion: 1,
      date: new Date().toISOString(),
      commit,
      dirty,
      mode: quick ? "quick" : "default",
      backend: started.backend,
      machine,
      versions: packageVersions(),
      settings: { suites: suiteNames, dtypes, plan, large, planned: total },
      results,
      failures,
      durationSeconds: (performance.now() - startedAt) / 1000,
    };
    const reportPath = writeRun(run, machineDir);
    if (!writeIndex(outDir)) process.stderr.write(`left ${join(outDir, "README.md")} as it was: not an index of results (the report is ${reportPath})\n`);
    return reportPath;
  };
  for (const group of groups) {
    try {
      for (const c of group.cases) {
        progress.step(`${c.suite} ${c.name} ${Object.entries(c.params).map(([k, v]) => `${k}=${v}`).join(" ")}`);
        try {
          results.push(c.execute());
        } catch (error) {
          const message = error instanceof Error ? error.message : String(error);
          failures.push({ suite: c.suite, name: c.name, params: c.params, error: message });
          process.stderr.write(`\n${c.suite} ${c.name}: ${message}\n`);
        }
      }
    } finally {
      group.dispose?.();
    }
    save();
  }
  progress.finish(`${results.length} measured, ${failures.length} failed`);
  process.stderr.write(`report: ${save()}\n`);
  if (failures.length > 0) process.exitCode = 1;
}

main().catch((error: unknown) => {
  // A bad flag: its message and the usage. Anything else failed inside a run: its stack, which the usage would bury.
  const flag = describeFailure(error) === (error as Error).message;
  process.stderr.write(`${describeFailure(error)}\n${flag ? USAGE : ""}`);
  process.exitCode = flag ? 2 : 1;
});
