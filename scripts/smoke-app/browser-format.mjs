import { BsrMatrix, encodeSafetensors } from "@blocksparse/format";

console.log(BsrMatrix, encodeSafetensors);
