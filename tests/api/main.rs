//! All API tests in one binary (link time): a real server on port 0 over real HTTP, against a
//! fresh SQLite file or a fresh PostgreSQL database per test. Every backend-sensitive test runs
//! on both through `both!`.

mod access;
mod amqp;
mod audit;
mod bad_input;
mod booking;
mod bundles;
mod crud;
mod helpers;
mod messages;
mod notify;
mod oidc;
mod planner;
mod scheduling;
mod search;
mod smart;
