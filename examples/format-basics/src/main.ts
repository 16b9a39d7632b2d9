import { runFormatBasics } from "./basics.js";

const result = await runFormatBasics((line) => console.log(line));
console.log(
  `round trips exact: bytes ${result.bytesRoundTripExact}, file ${result.fileRoundTripExact}; float16 max error ${result.float16MaxError.toExponential(2)}`,
);
if (!result.bytesRoundTripExact || !result.fileRoundTripExact || result.keptBlocksError !== 0) process.exitCode = 1;
