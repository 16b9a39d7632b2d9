/** tc_audit_cli.ts's flags, parsed and checked before the files are read. */
import { type CliSpec, decimal, FlagError, parseFlags } from "./flags";

export const TC_AUDIT_CLI = {
  usage: "tsx src/tc_audit_cli.ts TC_BENCH_LOG... [--within FRACTION]",
  summary: "Prints where tc_bench's auto (the dispatch) was slower than another route it timed, per case, form and block.",
  positionals: "TC_BENCH_LOG: the output of tc_bench --mode time --paths auto,... (one or more files)",
  flags: { within: { type: "string", default: "0.03", description: "the margin: auto more than this fraction over the best is missed" } },
} as const satisfies CliSpec;

/** The files to read and the margin (FlagError naming the flag for a bad one). */
export function parseTcAuditFlags(args: string[] = process.argv.slice(2)): { files: string[]; within: number } {
  const { values, positionals } = parseFlags(TC_AUDIT_CLI, args);
  if (positionals.length === 0) throw new FlagError(`usage: ${TC_AUDIT_CLI.usage} (no log given)`);
  const text = values.within;
  // Written as every other number flag is (".05" and "5e-2" too, which the margin's own pattern refused as no fraction).
  const within = decimal(text);
  if (!Number.isFinite(within) || within >= 1) throw new FlagError(`--within: "${text}" is not a fraction from 0 up to 1 (0.03 for 3%)`);
  return { files: positionals, within };
}
