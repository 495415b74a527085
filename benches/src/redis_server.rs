//! A `redis-server` of the client's own, for the `keel-hyper-redis` variants: started on a free
//! loopback port, measured through `/proc`, killed when dropped.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server` (persistence off), killed and reaped on drop.
pub(crate) struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts `redis-server` on a free port of 127.0.0.1, pinned to `cpu` if given, and waits
    /// until it accepts connections.
    pub(crate) fn start(cpu: Option<usize>) -> Result<Self, String> {
        // A port the kernel just handed out and took back: free unless someone races for it.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        // SAFETY: the closure runs in the forked child before exec and makes only two
        // async-signal-safe system calls on stack values; it allocates nothing.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                // Dies with this process's main thread (which starts it), even on a crash.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if let Some(cpu) = cpu {
                    let mut set = std::mem::zeroed::<libc::cpu_set_t>();
                    libc::CPU_SET(cpu, &mut set);
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting redis-server (is it installed?): {e}"))?;
        let mut server = Self { child, port };
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("redis-server on port {port} exited with {status}"));
            }
            if Instant::now() > until {
                return Err(format!("redis-server on port {port} did not start in 10 s"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The URL clients connect to.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's CPU time so far (user + system, all threads), in microseconds, from
    /// `/proc/PID/stat`: clock-tick resolution (10 ms at the usual 100 Hz).
    pub(crate) fn cpu_time_us(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces, inside parentheses): state is
        // the first, utime the 12th and stime the 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let ticks: f64 = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse::<f64>().ok())
            .sum();
        // SAFETY: sysconf only reads a configuration value.
        let hz = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
            hz if hz > 0 => hz as f64,
            _ => 100.0,
        };
        ticks * 1e6 / hz
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
