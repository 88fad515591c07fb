//! A process table set by hand: the demo's PIA processes, and tests' tables.

use std::sync::{Arc, Mutex};

use crate::presence::{ProcInfo, ProcessSource};

/// A process table that its owner sets; clones share it, so a test can change what the agent
/// sees while it runs.
#[derive(Clone, Default)]
pub struct ProcessTable {
    table: Arc<Mutex<Vec<ProcInfo>>>,
}

impl ProcessTable {
    pub fn new(table: Vec<ProcInfo>) -> Self {
        ProcessTable {
            table: Arc::new(Mutex::new(table)),
        }
    }

    pub fn set(&self, table: Vec<ProcInfo>) {
        *self.table.lock().unwrap_or_else(|e| e.into_inner()) = table;
    }
}

impl ProcessSource for ProcessTable {
    fn processes(&mut self) -> Vec<ProcInfo> {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
