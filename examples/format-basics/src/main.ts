import { parseArgs } from "node:util";
import { runFormatBasics } from "./basics.js";

async function main(): Promise<void> {
  // The walk-through takes no flags: --help says what it does, anything else is an error rather than ignored.
  const { values } = parseArgs({ args: process.argv.slice(2).filter((arg) => arg !== "--"), options: { help: { type: "boolean", short: "h" } }, strict: true });
  if (values.help) {
    console.log("Builds a BSR matrix, shows it in PyTorch's and SciPy's layouts, and round-trips it through safetensors (in a temporary folder). No flags.");
    return;
  }
  const result = await runFormatBasics((line) => console.log(line));
  console.log(
    `round trips exact: bytes ${result.bytesRoundTripExact}, file ${result.fileRoundTripExact}; float16 max error ${result.float16MaxError.toExponential(2)}`,
  );
  if (!result.bytesRoundTripExact || !result.fileRoundTripExact || result.keptBlocksError !== 0) process.exitCode = 1;
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? `${error.name}: ${error.message}` : String(error));
  process.exitCode = 1;
});
