import { afterAll, describe, expect, it, vi } from "vitest";
import { StoreTimeoutError, TcpStore } from "../src/index";

/** Port 1 stands for a host that never completes the TCP handshake (its SYNs dropped): the attempt neither connects nor fails. */
vi.mock("node:net", async (importOriginal) => {
  const net = await importOriginal<typeof import("node:net")>();
  const stuck: import("node:net").Socket[] = [];
  return {
    ...net,
    stuck,
    connect: (options: import("node:net").NetConnectOpts) => {
      if ("port" in options && options.port === 1) {
        const socket = new net.Socket();
        stuck.push(socket);
        return socket;
      }
      return net.connect(options);
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
});
