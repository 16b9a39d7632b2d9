import { afterAll, describe, expect, it, vi } from "vitest";
import { StoreTimeoutError, TcpStore, TcpStoreServer } from "../src/index";
import { freePort } from "./helpers";

/**
 * Port 1 stands for a host that never completes the TCP handshake (its SYNs dropped): the attempt neither connects nor fails.
 * A port in `selfConnect` gets, at its next attempt, the local port the kernel may pick by chance: the store's own, which
 * connects the socket to itself while nothing listens there; `selfConnected` settles once that socket has closed.
 */
vi.mock("node:net", async (importOriginal) => {
  const net = await importOriginal<typeof import("node:net")>();
  const stuck: import("node:net").Socket[] = [];
  const selfConnect = new Map<number, (closed: Promise<void>) => void>();
  return {
    ...net,
    stuck,
    selfConnected: (port: number) => new Promise<Promise<void>>((resolve) => selfConnect.set(port, resolve)),
    connect: (options: import("node:net").NetConnectOpts) => {
      if ("port" in options && options.port === 1) {
        const socket = new net.Socket();
        stuck.push(socket);
        return socket;
      }
      const port = "port" in options ? options.port : undefined;
      const said = port === undefined ? undefined : selfConnect.get(port);
      if (port === undefined || said === undefined) return net.connect(options);
      selfConnect.delete(port);
      const socket = net.connect({ ...options, localAddress: "127.0.0.1", localPort: port });
      said(new Promise<void>((resolve) => socket.once("close", () => resolve())));
      return socket;
    },
  };
});

afterAll(async () => {
  const { stuck } = (await import("node:net")) as unknown as { stuck: import("node:net").Socket[] };
  for (const socket of stuck) socket.destroy();
});

describe("TcpStore.connect", () => {
  it("gives up on a connection attempt that never completes once the timeout has passed, with a StoreTimeoutError naming the address", async () => {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("still connecting after 5x the timeout")), 1000);
    });
    const connecting = TcpStore.connect("127.0.0.1", 1, { timeoutMs: 200 });
    try {
      await expect(Promise.race([connecting, late])).rejects.toThrow(StoreTimeoutError);
    } finally {
      clearTimeout(timer);
    }
    await expect(connecting).rejects.toThrow(/could not reach the store at 127.0.0.1:1 within 0.2 s \(last error: the connection attempt did not complete in time\)/);
  });

  it("retries an attempt that connected to itself (the store not up yet, its port picked as the local one) instead of failing at once with a StoreProtocolError", async () => {
    const port = await freePort();
    const { selfConnected } = (await import("node:net")) as unknown as { selfConnected: (port: number) => Promise<Promise<void>> };
    const attempted = selfConnected(port);
    const connecting = TcpStore.connect("127.0.0.1", port, { timeoutMs: 20_000 });
    connecting.catch(() => {});
    // The store comes up once the socket that held its port is gone, as a rank 0 that starts late.
    await (await attempted);
    const server = await TcpStoreServer.listen("127.0.0.1", port);
    try {
      const store = await connecting;
      await store.set("k", new Uint8Array([1]));
      store.close();
    } finally {
      await server.close();
    }
  });
});
