import { add, randn, tidy, setBackend } from "@blocksparse/core";
setBackend("js");
const a = randn([16], { seed: 1 });
const b = randn([16], { seed: 2 });
for (const mode of ["tidy-per-100", "tidy-per-100", "no-tidy-dispose", "no-tidy-dispose"]) {
  const t0 = performance.now();
  const n = 200000;
  if (mode === "tidy-per-100") { for (let i = 0; i < n / 100; i++) tidy(() => { let c = a; for (let j = 0; j < 100; j++) c = add(c, b); }); }
  else for (let i = 0; i < n; i++) add(a, b).dispose();
  console.log(mode, ((performance.now() - t0) * 1000 / n).toFixed(2), "us/op");
}
