#!/usr/bin/env python3
"""A vendor's Modbus/TCP engineering client, played by pymodbus (tests/tests/modbus.rs).

Usage: client.py HOST PORT STEP...

Each step is one request; the result of each is printed as one JSON line:
  read:ADDRESS:COUNT        read holding registers (FC 3)
  input:ADDRESS:COUNT       read input registers (FC 4)
  write:ADDRESS:VALUE       write a single holding register (FC 6)
  writes:ADDRESS:V1,V2,...  write multiple holding registers (FC 16)
  coil:ADDRESS:0|1          write a single coil (FC 5)

A result is {"step": ..., "ok": true, "values": [...]} or {"step": ..., "ok": false,
"exception": CODE} for a Modbus exception response. Any other failure (no answer, a closed
connection) ends the script with exit code 2 and the error on stderr.
"""

import json
import sys

from pymodbus.client import ModbusTcpClient


def run(client, step):
    kind, address, arg = step.split(":")
    address = int(address)
    if kind == "read":
        rr = client.read_holding_registers(address, count=int(arg))
    elif kind == "input":
        rr = client.read_input_registers(address, count=int(arg))
    elif kind == "write":
        rr = client.write_register(address, int(arg))
    elif kind == "writes":
        rr = client.write_registers(address, [int(v) for v in arg.split(",")])
    elif kind == "coil":
        rr = client.write_coil(address, arg == "1")
    else:
        raise SystemExit(f"unknown step {step!r}")
    if rr.isError():
        return {"step": step, "ok": False, "exception": rr.exception_code}
    values = getattr(rr, "registers", None) or []
    return {"step": step, "ok": True, "values": list(values)}


def main():
    host, port, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    client = ModbusTcpClient(host, port=port, timeout=10, retries=0)
    if not client.connect():
        print(f"cannot connect to {host}:{port}", file=sys.stderr)
        return 2
    try:
        for step in steps:
            print(json.dumps(run(client, step)), flush=True)
    except Exception as e:  # noqa: BLE001 - any failure is the test's to report
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 2
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
