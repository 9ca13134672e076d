//! Test upstream server (being written).
