import { BsrMatrix, encodeSafetensors } from "@blocksparse/format";
import { decodeScipyNpz } from "@blocksparse/format/npz";

console.log(BsrMatrix, encodeSafetensors, decodeScipyNpz);
