import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { GpuInfo, MachineInfo } from "./record";

/** The repository root (benchmarks/ is one level below it). */
export const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

/** Lower-case words joined by dashes: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3". */
export function slug(text: string): string {
  return text
    .toLowerCase()
    .replace(/\(r\)|\(tm\)|\bcpu\b|\bprocessor\b|@.*$/g, " ")
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "");
}

export function describeMachine(gpu?: GpuInfo): MachineInfo {
  const cpus = os.cpus();
  const cpuModel = cpus[0]?.model.trim() ?? "unknown CPU";
  const cpuCores = os.availableParallelism?.() ?? cpus.length;
  const name = gpu ? `gpu-${slug(gpu.name)}` : `cpu-${slug(cpuModel) || "unknown"}-${cpuCores}c`;
  return {
    name,
    cpuModel,
    cpuCores,
    memoryBytes: os.totalmem(),
    platform: os.platform(),
    arch: os.arch(),
    node: process.version,
    ...(gpu ? { gpu } : {}),
  };
}

function git(args: string[]): string | undefined {
  try {
    return execFileSync("git", args, { cwd: repoRoot, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return undefined;
  }
}

/**
 * The commit checked out, and whether tracked files differ from it ("unknown" outside git).
 * BENCH_COMMIT overrides it for copies of a checkout whose .git is absent or stale.
 */
export function gitState(): { commit: string; dirty: boolean } {
  const override = process.env.BENCH_COMMIT;
  if (override) return { commit: override, dirty: process.env.BENCH_DIRTY === "1" };
  const commit = git(["rev-parse", "HEAD"]) ?? "unknown";
  const status = git(["status", "--porcelain", "--untracked-files=no"]);
  return { commit, dirty: status !== undefined && status.length > 0 };
}

/** Versions of the workspace packages, read from their package.json files. */
export function packageVersions(): Record<string, string> {
  const versions: Record<string, string> = {};
  const packagesDir = join(repoRoot, "packages");
  let dirs: string[] = [];
  try {
    dirs = readdirSync(packagesDir);
  } catch {
    return versions;
  }
  for (const dir of dirs.sort()) {
    try {
      const pkg = JSON.parse(readFileSync(join(packagesDir, dir, "package.json"), "utf8")) as { name?: string; version?: string };
      if (pkg.name && pkg.version) versions[pkg.name] = pkg.version;
    } catch {
      // A folder without a package.json is not a package.
    }
  }
  versions.node = process.version;
  return versions;
}
