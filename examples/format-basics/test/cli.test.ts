import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { runNode } from "../../../packages/distributed/test/helpers";

/** `tsx src/main.ts <args>` in this example's folder, workspace packages from their sources. */
const demo = (...args: string[]) => runNode(["--import", "tsx", "src/main.ts", ...args], { cwd: resolve(import.meta.dirname, "..") });

describe("the demo's command line", { timeout: 30_000 }, () => {
  it("rejects a flag, since it takes none, instead of ignoring it", async () => {
    const result = await demo("--out", "x");
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/Unknown option '--out'/);
    expect(result.stderr).not.toMatch(/^\s+at /m);
    expect(result.stdout).toBe("");
  });

  it("interop/read.ts names a missing input file and the step that writes it, without a stack trace", async () => {
    const missing = join(tmpdir(), "blocksparse-no-such-folder");
    const result = await runNode(["--import", "tsx", "interop/read.ts", missing], { cwd: resolve(import.meta.dirname, "..") });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/read\.ts: .*theirs\.safetensors does not exist: check\.py writes it .*interop\/run\.sh runs all three/);
    expect(result.stderr).not.toMatch(/^\s+at /m);
  });

  it("interop/write.ts names a missing output folder, or a file given for it, without a stack trace", async () => {
    // It failed on its first write with "BsrIoError: write .../ours.safetensors: no such file or directory" and a stack trace.
    const cwd = mkdtempSync(join(tmpdir(), "blocksparse-interop-write-"));
    try {
      writeFileSync(join(cwd, "a-file"), "");
      const missing = await runNode(["--import", "tsx", resolve(import.meta.dirname, "..", "interop", "write.ts"), join(cwd, "missing")], { cwd: resolve(import.meta.dirname, "..") });
      expect(missing.code).toBe(1);
      expect(missing.stderr).toBe(`write.ts: the folder ${join(cwd, "missing")} does not exist: make it first (mkdir -p ${join(cwd, "missing")}), or run interop/run.sh, which makes it\n`);
      const file = await runNode(["--import", "tsx", resolve(import.meta.dirname, "..", "interop", "write.ts"), join(cwd, "a-file")], { cwd: resolve(import.meta.dirname, "..") });
      expect(file.code).toBe(1);
      expect(file.stderr).toBe(`write.ts: ${join(cwd, "a-file")} is not a folder: give the folder to write the matrices in\n`);
      expect(readdirSync(cwd)).toEqual(["a-file"]);
    } finally {
      rmSync(cwd, { recursive: true, force: true });
    }
  });

  it("interop/run.sh writes into a relative folder it is given, from wherever it is run", () => {
    // It made the folder where it was run, then wrote from examples/format-basics, where the folder was not: a stack trace.
    const cwd = mkdtempSync(join(tmpdir(), "blocksparse-interop-"));
    try {
      const result = spawnSync("bash", [resolve(import.meta.dirname, "..", "interop", "run.sh"), "out"], { cwd, encoding: "utf8" });
      // check.py may then stop for want of PyTorch; the files write.ts makes must be in cwd/out either way.
      expect(result.stdout).toContain(`wrote fc.weight, proj.weight, head.weight to ${join(cwd, "out")}`);
      for (const file of ["ours.safetensors", "ours-dense.safetensors", "ours-fc.npz", "ours-proj.npz"]) expect(existsSync(join(cwd, "out", file)), file).toBe(true);
      expect(existsSync(resolve(import.meta.dirname, "..", "out"))).toBe(false);
    } finally {
      rmSync(cwd, { recursive: true, force: true });
    }
  });

  it("interop/run.sh removes the temporary folder it makes when given none, whether or not the check passes", () => {
    // Each run left a folder of matrices in the temporary directory.
    const temporary = mkdtempSync(join(tmpdir(), "blocksparse-interop-tmp-"));
    try {
      const result = spawnSync("bash", [resolve(import.meta.dirname, "..", "interop", "run.sh")], { env: { ...process.env, TMPDIR: temporary }, encoding: "utf8" });
      const written = /^wrote fc\.weight, proj\.weight, head\.weight to (.+)$/m.exec(result.stdout)?.[1];
      expect(written, result.stderr).toMatch(new RegExp(`^${temporary}/`));
      expect(existsSync(written as string), written).toBe(false);
    } finally {
      rmSync(temporary, { recursive: true, force: true });
    }
  });

  it("says what it does for --help", async () => {
    const result = await demo("--help");
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/round-trips it through safetensors .* No flags/);
  });
});
