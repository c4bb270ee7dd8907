-- Access per granted port (issue 14): what a device's ports speak, whether writes may ever be
-- granted on them, where writes may go, and what each request asks for and each grant allows.

-- `502=modbus,...`: the ports the relay decodes as Modbus/TCP; every other port is raw TCP.
ALTER TABLE devices ADD COLUMN protocols TEXT NOT NULL DEFAULT '';
-- Whether `write` access may be granted on the Modbus ports at all.
ALTER TABLE devices ADD COLUMN writes TEXT NOT NULL DEFAULT 'allowed' CHECK (writes IN ('allowed', 'never'));
-- Where granted writes may go: unit ids (`1,2`) and holding registers (`100-199,300`); empty
-- means unbounded.
ALTER TABLE devices ADD COLUMN write_units TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN write_registers TEXT NOT NULL DEFAULT '';

-- What the vendor asked for on the Modbus ports, narrowed by the approval: `read` or `write`.
-- Requests made before this migration were raw TCP only; `read` is what they get if their
-- device's ports are later named Modbus.
ALTER TABLE access_requests ADD COLUMN access TEXT NOT NULL DEFAULT 'read' CHECK (access IN ('read', 'write'));
