#!/usr/bin/env node
import { launch, parseLauncherArgs } from "./launcher";

async function main(): Promise<number> {
  try {
    return await launch(parseLauncherArgs(process.argv.slice(2)));
  } catch (error) {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    return 2;
  }
}

main().then((code) => process.exit(code));
