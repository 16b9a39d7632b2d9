/** A rank that writes its pid to `<out>/rank<R>.pid` and then runs until it is stopped. */
import { writeFileSync } from "node:fs";
import { join } from "node:path";

writeFileSync(join(process.argv[2], `rank${process.env.RANK}.pid`), String(process.pid));
setInterval(() => {}, 1000);
