import { readFile } from "node:fs/promises";
import { decodeScipyNpz } from "../../src/npz.js";

/** Decodes the .npz file at the path given and prints what came of it, for a parent that runs this with a small heap. */
const [path] = process.argv.slice(2);
try {
  const matrix = decodeScipyNpz(new Uint8Array(await readFile(path)));
  console.log(JSON.stringify({ read: matrix.shape }));
} catch (error) {
  console.log(JSON.stringify({ name: (error as Error).name, message: (error as Error).message }));
}
