import { add, tensor, tidy, setBackend } from "@blocksparse/core";
setBackend("js");
const a = tensor(new Float32Array(16).fill(1), [16]);
const b = tensor(new Float32Array(16).fill(2), [16]);
function run(n: number) { for (let i = 0; i < n / 100; i++) tidy(() => { let c = a; for (let k = 0; k < 100; k++) c = add(c, b); }); }
run(200000);
for (let r = 0; r < 5; r++) { const t0 = performance.now(); run(200000); const t = performance.now() - t0; console.log((t / 200000 * 1000).toFixed(3), "us/op"); }
