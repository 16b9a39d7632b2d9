import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const outDir = join(mkdtempSync(join(tmpdir(), "blocksparse-native-")), "native");
afterAll(() => rmSync(dirname(outDir), { recursive: true, force: true }));

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

// A published package has no kernels-cuda/ beside it: prepack copies the CMake project into native/.
describe("the published package's native sources", () => {
  execFileSync(process.execPath, [join(packageDir, "../../scripts/vendor-native.mjs"), "kernels-cuda", outDir], { cwd: packageDir, stdio: "pipe" });
  const cmake = readFileSync(join(outDir, "CMakeLists.txt"), "utf8");

  it("hold every source the addon target lists", () => {
    const target = /add_library\(blocksparse_cuda SHARED([\s\S]*?)\)/.exec(cmake);
    expect(target).not.toBeNull();
    const sources = (target?.[1] ?? "").split(/\s+/).filter((word) => word.startsWith("src/"));
    expect(sources.length).toBeGreaterThan(5);
    for (const source of sources) expect(existsSync(join(outDir, source)), source).toBe(true);
  });

  it("hold every local header the sources include", () => {
    const files = walk(join(outDir, "src"));
    for (const file of files) {
      for (const match of readFileSync(file, "utf8").matchAll(/^#include "([^"]+)"/gm)) {
        const header = match[1] ?? "";
        const found = [join(dirname(file), header), join(outDir, "src", header)].some((path) => existsSync(path));
        expect(found, `${file} includes ${header}`).toBe(true);
      }
    }
  });

  it("declare the addon Node-API only, so cmake-js builds it without downloading Node's headers", () => {
    const manifest = JSON.parse(readFileSync(join(outDir, "package.json"), "utf8")) as { binary?: { napi_versions?: number[] } };
    expect(manifest.binary?.napi_versions?.length).toBeGreaterThan(0);
  });

  it("are listed in the package's files", () => {
    const manifest = JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8")) as { files: string[] };
    expect(manifest.files).toContain("native");
  });
});
