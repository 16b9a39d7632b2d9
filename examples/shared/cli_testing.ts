// Test helpers for the examples' CLIs (mnist, transformer, distil): their flag checks called in-process.

import { expect, vi } from "vitest";

/** Core's engine (`engine` from @blocksparse/core, which examples/shared does not depend on): every backend starts through it. */
interface Engine {
  backendInstance(name: string): unknown;
}

/**
 * What `parse` (a CLI's flag check) refuses, as the CLI prints it ("RangeError: --lr: ..."), checked to keep the
 * CLI's promise: refused before a backend starts or a line is printed. Fails if `parse` accepts, asks `engine` for
 * a backend, or writes anything.
 */
export function refusalOf(engine: Engine, parse: () => unknown): string {
  const backendAsked = vi.spyOn(engine, "backendInstance");
  const writes = [vi.spyOn(process.stdout, "write"), vi.spyOn(process.stderr, "write"), ...(["log", "info", "warn", "error"] as const).map((method) => vi.spyOn(console, method))];
  let refused: unknown;
  try {
    parse();
  } catch (error) {
    refused = error;
  } finally {
    const asked = backendAsked.mock.calls.length;
    const written = writes.flatMap((spy) => spy.mock.calls.map((call) => String(call[0])));
    for (const spy of [backendAsked, ...writes]) spy.mockRestore();
    expect(asked, "backends asked for").toBe(0);
    expect(written, "lines printed").toEqual([]);
  }
  expect(refused, "the flags were accepted").toBeInstanceOf(Error);
  const { name, message } = refused as Error;
  return `${name}: ${message}`;
}
