//! [`ModbusDevice`]: a Modbus/TCP server (tokio-modbus) standing in for a PLC, with
//! [`MODBUS_SIZE`] holding registers, input registers, coils and discrete inputs in memory that
//! tests can inspect.
//!
//! Supported: read coils / discrete inputs / holding registers / input registers, write single
//! and multiple coils and registers. Any other function answers `IllegalFunction`; a range past
//! the end answers `IllegalDataAddress`, a zero quantity `IllegalDataValue`. The unit id is
//! ignored. Initially holding registers and coils are zero/off, input register `i` holds
//! `1000 + i` and discrete input `i` is on when `i` is odd.

use std::io;
use std::net::SocketAddr;
use std::ops::{Deref, Range};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::net::TcpStream;
use tokio_modbus::server::tcp::Server;
use tokio_modbus::{ExceptionCode, Request, Response};

use super::Device;

/// How many of each kind of register and bit the device has (addresses `0..MODBUS_SIZE`).
pub const MODBUS_SIZE: usize = 100;

#[derive(Debug)]
struct Memory {
    holding: Vec<u16>,
    input: Vec<u16>,
    coils: Vec<bool>,
    discrete: Vec<bool>,
    /// The function code of every request that reached the device, in order.
    seen: Vec<u8>,
}

/// The Modbus simulator; derefs to its [`Device`] bookkeeping.
#[derive(Debug)]
pub struct ModbusDevice {
    device: Device,
    memory: Arc<Mutex<Memory>>,
}

impl ModbusDevice {
    /// Starts a Modbus/TCP device on `127.0.0.1:0`.
    pub async fn start() -> ModbusDevice {
        Self::serve(super::loopback_listener().await).await
    }

    /// Starts a Modbus/TCP device on a listener bound elsewhere: another address, or inside a
    /// network namespace (a socket stays in the namespace of the thread that made it).
    pub async fn start_on(listener: std::net::TcpListener) -> ModbusDevice {
        listener
            .set_nonblocking(true)
            .expect("a non-blocking device listener");
        let listener =
            tokio::net::TcpListener::from_std(listener).expect("a tokio device listener");
        Self::serve(listener).await
    }

    async fn serve(listener: tokio::net::TcpListener) -> ModbusDevice {
        let memory = Arc::new(Mutex::new(Memory {
            holding: vec![0; MODBUS_SIZE],
            input: (0..MODBUS_SIZE).map(|i| 1000 + i as u16).collect(),
            coils: vec![false; MODBUS_SIZE],
            discrete: (0..MODBUS_SIZE).map(|i| i % 2 == 1).collect(),
            seen: Vec::new(),
        }));
        let service = Service(Arc::clone(&memory));
        let device = Device::spawn(listener, move |listener, shared| async move {
            let on_connected = move |stream: TcpStream, peer: SocketAddr| {
                let conn = shared.admit(stream, peer);
                std::future::ready(io::Result::Ok(Some((service.clone(), conn))))
            };
            // tokio-modbus spawns a task per connection and cancels them all when this future
            // is dropped (the device's `Drop` aborts it). It returns only on an accept error.
            let _ = Server::new(listener).serve(&on_connected, |_| {}).await;
        })
        .await;
        ModbusDevice { device, memory }
    }

    fn memory(&self) -> MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The holding registers, all [`MODBUS_SIZE`] of them.
    pub fn registers(&self) -> Vec<u16> {
        self.memory().holding.clone()
    }

    /// The function code of every request that reached the device, oldest first: what a
    /// filter in front of it let through.
    pub fn functions_seen(&self) -> Vec<u8> {
        self.memory().seen.clone()
    }

    /// The coils, all [`MODBUS_SIZE`] of them.
    pub fn coils(&self) -> Vec<bool> {
        self.memory().coils.clone()
    }

    /// The input registers, all [`MODBUS_SIZE`] of them.
    pub fn input_registers(&self) -> Vec<u16> {
        self.memory().input.clone()
    }

    /// Sets input registers from `start` on, as a sensor would. Panics past the end.
    pub fn set_input_registers(&self, start: u16, values: &[u16]) {
        let start = usize::from(start);
        self.memory().input[start..start + values.len()].copy_from_slice(values);
    }
}

impl Deref for ModbusDevice {
    type Target = Device;
    fn deref(&self) -> &Device {
        &self.device
    }
}

#[derive(Debug, Clone)]
struct Service(Arc<Mutex<Memory>>);

impl tokio_modbus::server::Service for Service {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Request<'static>) -> Self::Future {
        let mut mem = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        mem.seen.push(req.function_code().value());
        std::future::ready(handle(&mut mem, req))
    }
}

fn handle(mem: &mut Memory, req: Request<'_>) -> Result<Response, ExceptionCode> {
    Ok(match req {
        Request::ReadCoils(a, n) => Response::ReadCoils(mem.coils[span(a, n)?].to_vec()),
        Request::ReadDiscreteInputs(a, n) => {
            Response::ReadDiscreteInputs(mem.discrete[span(a, n)?].to_vec())
        }
        Request::ReadHoldingRegisters(a, n) => {
            Response::ReadHoldingRegisters(mem.holding[span(a, n)?].to_vec())
        }
        Request::ReadInputRegisters(a, n) => {
            Response::ReadInputRegisters(mem.input[span(a, n)?].to_vec())
        }
        Request::WriteSingleCoil(a, v) => {
            mem.coils[span(a, 1)?.start] = v;
            Response::WriteSingleCoil(a, v)
        }
        Request::WriteMultipleCoils(a, vs) => {
            mem.coils[span_of(a, vs.len())?].copy_from_slice(&vs);
            Response::WriteMultipleCoils(a, vs.len() as u16)
        }
        Request::WriteSingleRegister(a, v) => {
            mem.holding[span(a, 1)?.start] = v;
            Response::WriteSingleRegister(a, v)
        }
        Request::WriteMultipleRegisters(a, vs) => {
            mem.holding[span_of(a, vs.len())?].copy_from_slice(&vs);
            Response::WriteMultipleRegisters(a, vs.len() as u16)
        }
        _ => return Err(ExceptionCode::IllegalFunction),
    })
}

fn span(addr: u16, quantity: u16) -> Result<Range<usize>, ExceptionCode> {
    span_of(addr, usize::from(quantity))
}

fn span_of(addr: u16, quantity: usize) -> Result<Range<usize>, ExceptionCode> {
    if quantity == 0 {
        return Err(ExceptionCode::IllegalDataValue);
    }
    let start = usize::from(addr);
    match start.checked_add(quantity) {
        Some(end) if end <= MODBUS_SIZE => Ok(start..end),
        _ => Err(ExceptionCode::IllegalDataAddress),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_modbus::prelude::*;

    #[tokio::test]
    async fn a_real_client_writes_and_reads_back() {
        let dev = ModbusDevice::start().await;
        let mut ctx = tcp::connect(dev.addr()).await.unwrap();

        ctx.write_multiple_registers(10, &[1, 2, 0xBEEF])
            .await
            .unwrap()
            .unwrap();
        ctx.write_single_register(0, 42).await.unwrap().unwrap();
        let regs = ctx.read_holding_registers(9, 5).await.unwrap().unwrap();
        assert_eq!(regs, [0, 1, 2, 0xBEEF, 0]);
        assert_eq!(dev.registers()[..1], [42]);
        assert_eq!(dev.registers()[10..13], [1, 2, 0xBEEF]);

        ctx.write_single_coil(5, true).await.unwrap().unwrap();
        ctx.write_multiple_coils(20, &[true, false, true])
            .await
            .unwrap()
            .unwrap();
        let coils = ctx.read_coils(19, 5).await.unwrap().unwrap();
        assert_eq!(coils, [false, true, false, true, false]);
        assert!(dev.coils()[5]);
        let bits = ctx.read_discrete_inputs(0, 3).await.unwrap().unwrap();
        assert_eq!(bits, [false, true, false]);

        assert_eq!(
            ctx.read_input_registers(0, 2).await.unwrap().unwrap(),
            [1000, 1001]
        );
        dev.set_input_registers(0, &[7]);
        assert_eq!(
            ctx.read_input_registers(0, 2).await.unwrap().unwrap(),
            [7, 1001]
        );

        let past_end = ctx.read_holding_registers(99, 2).await.unwrap();
        assert_eq!(past_end, Err(ExceptionCode::IllegalDataAddress));

        ctx.disconnect().await.unwrap();
        drop(ctx);
        let ev = dev.next_close().await;
        assert!(ev.bytes_in > 0 && ev.bytes_out > 0);
        assert_eq!((dev.accepted(), dev.open()), (1, 0));
    }
}
