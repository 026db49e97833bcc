//! Generates every shipped contract plus the all-types test contract: one line each.
fn main() {
    foundry::build::generate("../../contracts/bench/echo.ridl");
    foundry::build::generate("../../contracts/store/store.ridl");
    foundry::build::generate("../../contracts/drivers/block.ridl");
    foundry::build::generate("../../contracts/drivers/serial.ridl");
    foundry::build::generate("contracts/all_types.ridl");
}
