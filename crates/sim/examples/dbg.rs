use huione_sim::*;
fn main() {
    let seed: u64 = std::env::args().nth(1).unwrap().parse().unwrap();
    let m: usize = std::env::args().nth(2).unwrap().parse().unwrap();
    let upto: u64 = std::env::args().nth(3).unwrap().parse().unwrap();
    let mut sim = Sim::new(SimConfig::random(seed, 300));
    if let Err(e) = sim.run_slots(300) { println!("ERR {e}"); }
    sim.heal_all();
    let _ = sim.run_slots(upto);
    let c = sim.machines[m].core().unwrap();
    println!("{:?}", c.status());
    if let Some(t) = c.tower() { println!("tower root {:?} votes {:?}", t.root(), t.votes().map(|l| (l.slot, l.confirmation_count)).collect::<Vec<_>>()); }
    println!("fork slots {:?}", c.fork_slots());
    println!("{}", c.debug_fork_choice());
}
#[allow(dead_code)]
fn unused() {}
