import { optionsArg, ValueError } from "@blocksparse/core";
import { checkDistributedEnv, type DistributedEnv, defaultJobId } from "./env";
import { DistributedEnvError, StoreError, StoreTimeoutError } from "./errors";
import { type StoreTimeout, TcpStore, TcpStoreServer } from "./store";

/** Default time a rank waits for its peers in a rendezvous or a collective: 5 minutes. */
export const DEFAULT_TIMEOUT_MS = 300_000;

/** The ranks this process holds, as `<job id> <store address> <rank>`: from the start of their join until they close. */
const HELD_HERE = new Set<string>();

/**
 * One rank's place in the job: its connection to the store (and the store itself on the rank
 * that hosts it), and the two moves every exchange is made of: publish bytes under a key for
 * a number of readers, and collect what other ranks published under a key.
 */
export class Rendezvous {
  private constructor(
    readonly store: TcpStore,
    readonly rank: number,
    readonly worldSize: number,
    readonly timeoutMs: number,
    private readonly server: TcpStoreServer | null,
    /** Whether rank 0's process hosts the store (no launcher does): it then waits for the others to leave before closing it. */
    private readonly rankHostsStore: boolean,
    /** Put before every key this rendezvous publishes or collects: "" for a rank's first join, "join<n>/" for its n-th. */
    private readonly keyPrefix: string,
    /** This rank's entry in HELD_HERE, given back on close. */
    private readonly heldHere: string,
  ) {}

  /**
   * Joins the job described by `env`: rank 0 starts the store on MASTER_ADDR:MASTER_PORT (unless
   * the launcher hosts it), every rank connects (a store of another job, `env.jobId`, refuses it:
   * a StoreJobMismatchError), and the ranks check that they agree on the world size and that no
   * rank number is taken twice. All of it within one `timeoutMs`: past it, a
   * StoreTimeoutError naming what was being waited for. From then on the store knows this
   * connection as this rank's: if it closes before `shutdown`, every rank's waits fail at once
   * with a RankFailedError naming this rank.
   */
  static async join(env: DistributedEnv, options: { timeoutMs?: number } = {}): Promise<Rendezvous> {
    options = optionsArg("Rendezvous.join", options, ["timeoutMs"]);
    checkDistributedEnv("Rendezvous.join", env);
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) throw new ValueError(`timeoutMs must be a positive number of milliseconds, got ${String(timeoutMs)}`);
    const wait: StoreTimeout = { timeoutMs, deadline: Date.now() + timeoutMs };
    // The store's handshake checks it: a rank that reaches another job's store (one port given to two jobs) fails instead of joining.
    const jobId = env.jobId ?? defaultJobId(env.worldSize);
    // A second join of a rank this process holds (initProcessGroup called twice, the first group not destroyed) was
    // refused as another process using the rank, or on rank 0 as a port taken "perhaps by another job's store".
    const heldHere = `${jobId} ${env.masterAddr}:${env.masterPort} ${env.rank}`;
    if (HELD_HERE.has(heldHere)) {
      throw new DistributedEnvError(
        `RANK=${env.rank} of this job is already held by this process, in a process group it has not destroyed: initProcessGroup was called twice. Use the group it returned, or destroy it (await group.destroy() on every rank) before joining again`,
      );
    }
    HELD_HERE.add(heldHere);
    let server: TcpStoreServer | null = null;
    let store: TcpStore;
    try {
      server = env.rank === 0 && !env.launcherStore ? await TcpStoreServer.listenForJob(env.masterAddr, env.masterPort, { jobId }) : null;
      // Without the launcher, rank 0's process hosts the store: the store closing means rank 0 is gone.
      store = await TcpStore.connect(env.masterAddr, env.masterPort, { timeoutMs: wait, hostRank: env.launcherStore ? undefined : 0, jobId });
    } catch (error) {
      HELD_HERE.delete(heldHere);
      await server?.close();
      throw error;
    }
    let rendezvous = new Rendezvous(store, env.rank, env.worldSize, timeoutMs, server, !env.launcherStore, "", heldHere);
    try {
      // Counts the processes holding this rank now: destroy gives the rank back, so that it may join again.
      if ((await store.add(`rendezvous/rank/${env.rank}`, 1, { timeoutMs: wait })) > 1) {
        // Given back at once: the process that holds the rank may still destroy its group and join again.
        await store.add(`rendezvous/rank/${env.rank}`, -1, { timeoutMs: wait }).catch(() => {});
        throw new DistributedEnvError(`RANK=${env.rank} is used by two processes of this job: each process needs its own RANK in [0, ${env.worldSize - 1}]`);
      }
      // A rank that joins again after destroy (as torch allows) uses fresh keys: values a failed collective left behind are not read.
      const joins = await store.add(`rendezvous/joins/${env.rank}`, 1, { timeoutMs: wait });
      if (joins > 1) rendezvous = new Rendezvous(store, env.rank, env.worldSize, timeoutMs, server, !env.launcherStore, `join${joins}/`, heldHere);
      // After the check above: a second process given the same RANK must not make the store take the first for gone.
      await store.join(env.rank, { timeoutMs: wait });
      let sizes: Map<number, Uint8Array>;
      try {
        sizes = await rendezvous.exchange("rendezvous/world", new TextEncoder().encode(String(env.worldSize)), wait);
      } catch (error) {
        if (!(error instanceof StoreTimeoutError)) throw error;
        // Said as what it is: "store get 'rendezvous/world/2': no rank set it" did not say that rank 2 never joined.
        throw new StoreTimeoutError(
          `Rendezvous.join: rank ${env.rank} of WORLD_SIZE=${env.worldSize} waited ${timeoutMs / 1000} s for the other ranks to join: ${error.message}; is every rank started, with the same MASTER_ADDR, MASTER_PORT, WORLD_SIZE and BLOCKSPARSE_JOB_ID?`,
          { cause: error },
        );
      }
      for (const [peer, bytes] of sizes) {
        const theirs = new TextDecoder().decode(bytes);
        if (theirs !== String(env.worldSize)) {
          throw new DistributedEnvError(`rank ${peer} has WORLD_SIZE=${theirs} but rank ${env.rank} has WORLD_SIZE=${env.worldSize}: every rank must be started with the same WORLD_SIZE`);
        }
      }
    } catch (error) {
      await rendezvous.close();
      throw error;
    }
    return rendezvous;
  }

  /** The timeout of one exchange, starting now: steps given it share one deadline. */
  wait(): StoreTimeout {
    return { timeoutMs: this.timeoutMs, deadline: Date.now() + this.timeoutMs };
  }

  /** Sets `key/<rank>` to `value`, dropped once `readers` ranks have read it. */
  async publish(key: string, value: Uint8Array, readers: number, wait: StoreTimeout = this.wait()): Promise<void> {
    if (readers > 0) await this.store.set(`${this.keyPrefix}${key}/${this.rank}`, value, { reads: readers, timeoutMs: wait });
  }

  /**
   * What each of `ranks` published under `key`, waiting up to the timeout for all of them. Past it, a StoreTimeoutError
   * naming every rank still waited for (the first missing key alone named one of them).
   */
  async collect(key: string, ranks: readonly number[], wait: StoreTimeout = this.wait()): Promise<Map<number, Uint8Array>> {
    // Settled together: the gets share one deadline, and a rank found gone fails every one of them at once.
    const settled = await Promise.allSettled(ranks.map((peer) => this.store.get(`${this.keyPrefix}${key}/${peer}`, wait)));
    const failed = ranks.flatMap((peer, i) => {
      const result = settled[i];
      return result.status === "rejected" ? [{ peer, error: result.reason as unknown }] : [];
    });
    if (failed.length > 0) {
      const other = failed.find(({ error }) => !(error instanceof StoreTimeoutError));
      if (other !== undefined) throw other.error;
      const first = failed[0].error as StoreTimeoutError;
      const missing = failed.map(({ peer }) => peer);
      throw new StoreTimeoutError(`${first.message} (still waiting for rank${missing.length > 1 ? "s" : ""} ${missing.join(", ")})`, { cause: first });
    }
    return new Map(ranks.map((peer, i) => [peer, (settled[i] as PromiseFulfilledResult<Uint8Array>).value]));
  }

  /** Every other rank's `value` under `key` (each rank publishes its own and reads the rest), within one timeout. */
  async exchange(key: string, value: Uint8Array, wait: StoreTimeout = this.wait()): Promise<Map<number, Uint8Array>> {
    const others = this.others();
    await this.publish(key, value, others.length, wait);
    return this.collect(key, others, wait);
  }

  /** The ranks other than this one, ascending. */
  others(): number[] {
    return Array.from({ length: this.worldSize }, (_, r) => r).filter((r) => r !== this.rank);
  }

  /**
   * Leaves the job: waits until every rank is leaving, then each tells the store it leaves in
   * order and closes its connection; the rank hosting the store closes it last, once every other
   * rank said it is done with it. A rank that closes without this is taken for gone. `ownKeys`:
   * keys this rank published that no rank reads once every rank is leaving (a destroy's marker),
   * deleted then, so that a store that outlives the group (the launcher's) does not keep them.
   */
  async shutdown(ownKeys: readonly string[] = []): Promise<void> {
    try {
      const wait = this.wait();
      await this.exchange("shutdown/arrived", new Uint8Array(0), wait);
      // Every rank has passed its publishes: what only a peer still in a collective could have read is dropped.
      for (const key of ownKeys) await this.store.deleteKey(`${this.keyPrefix}${key}/${this.rank}`, { timeoutMs: wait });
      // The rank is free again: a later join with it in this job (a store the launcher hosts outlives the group) is not a duplicate.
      await this.store.add(`rendezvous/rank/${this.rank}`, -1, { timeoutMs: wait });
      // Before "left": once the others said they left, the rank hosting the store may close it.
      await this.store.leave({ timeoutMs: wait });
      // Only a rank hosting the store waits for the others to leave: a store the launcher hosts would keep each "left" unread.
      if (this.server !== null) await this.collect("shutdown/left", this.others(), wait);
      else if (this.rankHostsStore) await this.publish("shutdown/left", new Uint8Array(0), 1, wait);
    } finally {
      await this.close();
    }
  }

  /** Closes at once (no handshake): for a failed start. The store takes this rank for gone once it joined. */
  async close(): Promise<void> {
    HELD_HERE.delete(this.heldHere);
    this.store.close();
    await this.server?.close();
  }
}

/** Wraps a store failure met during `what` as the error type the caller throws, keeping the cause. */
export function explainStoreFailure(error: unknown, make: (message: string) => Error, what: string): unknown {
  if (!(error instanceof StoreError)) return error;
  const wrapped = make(`${what}: ${error.message}`);
  (wrapped as Error & { cause?: unknown }).cause = error;
  return wrapped;
}
