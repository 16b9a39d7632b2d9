import { save } from "@blocksparse/nn/node";

console.log(save);
