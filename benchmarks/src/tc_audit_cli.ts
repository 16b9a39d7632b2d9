/**
 * Prints the dispatch audit of tc_bench's timings (see tc_audit.ts):
 *   tsx src/tc_audit_cli.ts TC_BENCH_LOG... [--within 0.03]
 */
import { readFileSync } from "node:fs";
import { describeFailure, FlagError } from "./flags";
import { auditDispatch, auditMarkdown, parseTcBenchTimes, TcBenchParseError } from "./tc_audit";
import { parseTcAuditFlags } from "./tc_audit_flags";

try {
  const { files, within } = parseTcAuditFlags();
  const times = files.flatMap((file) => {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (error) {
      throw new FlagError(`${file}: cannot read it: ${(error as Error).message}`);
    }
    try {
      return parseTcBenchTimes(text);
    } catch (error) {
      if (error instanceof TcBenchParseError) throw new FlagError(`${file}: ${error.message}`);
      throw error;
    }
  });
  const audit = auditDispatch(times, within);
  if (audit.cases.length === 0) throw new FlagError(`${files.join(", ")}: no case with auto and another route timed (tc_bench --mode time --paths auto,...)`);
  process.stdout.write(auditMarkdown(audit));
} catch (error) {
  process.stderr.write(`${describeFailure(error)}\n`);
  process.exit(1);
}
