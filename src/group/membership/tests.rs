use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::*;

const SESSION: Duration = Duration::from_secs(10);

fn counts(partitions: u32) -> BTreeMap<String, u32> {
    BTreeMap::from([("t".to_string(), partitions)])
}

fn request(strategy: Strategy) -> JoinRequest {
    JoinRequest {
        member_id: String::new(),
        instance_id: None,
        client_id: "test".into(),
        topics: BTreeSet::from(["t".to_string()]),
        strategy,
        session_timeout: SESSION,
        rebalance_timeout: SESSION,
    }
}

struct Ids(u32);

impl Ids {
    fn next(&mut self) -> String {
        self.0 += 1;
        format!("m{}", self.0)
    }
}

fn join(group: &mut Group, ids: &mut Ids, strategy: Strategy, now: Instant) -> String {
    let id = ids.next();
    group
        .join(request(strategy), now, &counts(12), || id)
        .expect("join")
}

/// Heartbeats every member (taking what it is handed, giving back what it is not) until
/// every member is settled. Returns the rounds it took. Checks after every heartbeat that
/// no partition is owned by two members.
fn settle(group: &mut Group, now: Instant) -> usize {
    for round in 1..=20 {
        let ids: Vec<String> = group.members.keys().cloned().collect();
        let mut all_settled = true;
        for id in ids {
            let owned = group.members[&id].owned.clone();
            let acked = group.members[&id].handed_seq;
            let generation = group.generation;
            let outcome = group
                .heartbeat(&id, generation, owned, acked, now, &counts(12))
                .expect("heartbeat");
            // The member drops what it was not handed, takes what it was.
            group.members.get_mut(&id).expect("member").owned = outcome.assignment.clone();
            all_settled &= outcome.settled;
            assert_exclusive(group);
        }
        if all_settled && group.state() == GroupState::Stable {
            return round;
        }
    }
    panic!("the group never settled: {group:#?}");
}

fn assert_exclusive(group: &Group) {
    let mut seen = BTreeMap::new();
    for member in group.members.values() {
        for tp in &member.owned {
            if let Some(other) = seen.insert(tp.clone(), member.member_id.clone()) {
                panic!("{tp:?} owned by {other} and {}", member.member_id);
            }
        }
    }
}

fn owned_total(group: &Group) -> usize {
    group.members.values().map(|m| m.owned.len()).sum()
}

#[test]
fn a_lone_member_gets_every_partition() {
    let now = Instant::now();
    let mut group = Group::new("g");
    let mut ids = Ids(0);
    join(&mut group, &mut ids, Strategy::CooperativeSticky, now);
    settle(&mut group, now);
    assert_eq!(owned_total(&group), 12);
    assert_eq!(group.generation, 1);
}

#[test]
fn cooperative_rebalance_keeps_unmoved_partitions_owned_throughout() {
    let now = Instant::now();
    let mut group = Group::new("g");
    let mut ids = Ids(0);
    let first = join(&mut group, &mut ids, Strategy::CooperativeSticky, now);
    settle(&mut group, now);
    let before = group.members[&first].owned.clone();
    join(&mut group, &mut ids, Strategy::CooperativeSticky, now);
    // The first member's next heartbeat gives back only the moved half.
    let outcome = group
        .heartbeat(
            &first,
            group.generation,
            before.clone(),
            group.members[&first].handed_seq,
            now,
            &counts(12),
        )
        .expect("heartbeat");
    assert_eq!(outcome.assignment.len(), 6);
    assert!(outcome.assignment.is_subset(&before));
    settle(&mut group, now);
    assert_eq!(owned_total(&group), 12);
    for member in group.members.values() {
        assert_eq!(member.owned.len(), 6);
    }
}

#[test]
fn eager_rebalance_takes_everything_back_before_dealing() {
    let now = Instant::now();
    let mut group = Group::new("g");
    let mut ids = Ids(0);
    let first = join(&mut group, &mut ids, Strategy::Range, now);
    settle(&mut group, now);
    let second = join(&mut group, &mut ids, Strategy::Range, now);
    let owned = group.members[&first].owned.clone();
    let outcome = group
        .heartbeat(
            &first,
            group.generation,
            owned,
            group.members[&first].handed_seq,
            now,
            &counts(12),
        )
        .expect("heartbeat");
    assert!(outcome.assignment.is_empty(), "eager: give everything back");
    assert!(!outcome.settled);
    // The newcomer gets nothing until the first member reports owning nothing.
    let outcome = group
        .heartbeat(
            &second,
            group.generation,
            BTreeSet::new(),
            group.members[&second].handed_seq,
            now,
            &counts(12),
        )
        .expect("heartbeat");
    assert!(outcome.assignment.is_empty());
    settle(&mut group, now);
    assert_eq!(group.members[&first].owned.len(), 6);
    assert_eq!(group.members[&second].owned.len(), 6);
}

#[test]
fn a_partition_is_never_handed_out_while_another_member_owns_it() {
    let now = Instant::now();
    let mut group = Group::new("g");
    let mut ids = Ids(0);
    let first = join(&mut group, &mut ids, Strategy::CooperativeSticky, now);
    settle(&mut group, now);
    let second = join(&mut group, &mut ids, Strategy::CooperativeSticky, now);
    // The newcomer heartbeats before the first member gave anything back.
    let outcome = group
        .heartbeat(
            &second,
            group.generation,
            BTreeSet::new(),
            group.members[&second].handed_seq,
            now,
            &counts(12),
        )
        .expect("heartbeat");
    assert!(outcome.assignment.is_empty());
    assert!(!outcome.settled);
    assert_eq!(group.members[&first].owned.len(), 12);
}

#[test]
fn silent_members_are_removed_and_their_partitions_move() {
    let now = Instant::now();
    let mut group = Group::new("g");
    let mut ids = Ids(0);
    let first = join(&mut group, &mut ids, Strategy::CooperativeSticky, now);
    let second = join(&mut group, &mut ids, Strategy::CooperativeSticky, now);
    settle(&mut group, now);
    let generation = group.generation;
    // Only the first keeps heartbeating.
    let later = now + SESSION / 2;
    let owned = group.members[&first].owned.clone();
    group
        .heartbeat(
            &first,
            generation,
            owned,
            group.members[&first].handed_seq,
            later,
            &counts(12),
        )
        .expect("heartbeat");
    let expired = group.expire(now + SESSION + Duration::from_millis(1), &counts(12));
    assert_eq!(expired, vec![second.clone()]);
    assert!(group.generation > generation);
    settle(&mut group, now + SESSION);
    assert_eq!(group.members[&first].owned.len(), 12);
    let error = group
        .heartbeat(&second, generation, BTreeSet::new(), 0, now, &counts(12))
        .expect_err("removed");
    assert_eq!(error.code, ErrorCode::UnknownMemberId);
}

#[test]
fn a_member_that_keeps_revoked_partitions_past_its_rebalance_timeout_is_removed() {
    let now = Instant::now();
    let mut group = Group::new("g");
    let mut ids = Ids(0);
    let first = join(&mut group, &mut ids, Strategy::CooperativeSticky, now);
    settle(&mut group, now);
    join(&mut group, &mut ids, Strategy::CooperativeSticky, now);
    // The first member heartbeats but never gives anything back.
    let all = group.members[&first].owned.clone();
    for step in 0..3u32 {
        let at = now + SESSION / 4 * step;
        group
            .heartbeat(
                &first,
                group.generation,
                all.clone(),
                group.members[&first].handed_seq,
                at,
                &counts(12),
            )
            .expect("heartbeat");
    }
    let expired = group.expire(now + SESSION + Duration::from_millis(1), &counts(12));
    assert!(expired.contains(&first), "{expired:?}");
}

#[test]
fn removed_and_zombie_members_cannot_commit() {
    let now = Instant::now();
    let mut group = Group::new("g");
    let mut ids = Ids(0);
    let first = join(&mut group, &mut ids, Strategy::CooperativeSticky, now);
    let second = join(&mut group, &mut ids, Strategy::CooperativeSticky, now);
    settle(&mut group, now);
    let mine = group.members[&first]
        .owned
        .iter()
        .next()
        .cloned()
        .expect("owns");
    let theirs = group.members[&second]
        .owned
        .iter()
        .next()
        .cloned()
        .expect("owns");
    let generation = group.generation;
    assert_eq!(group.check_commit(&first, generation, &mine), Ok(()));
    assert_eq!(
        group
            .check_commit(&first, generation, &theirs)
            .map_err(|e| e.code),
        Err(ErrorCode::PartitionNotAssigned)
    );
    assert_eq!(
        group
            .check_commit("", generation, &mine)
            .map_err(|e| e.code),
        Err(ErrorCode::UnknownMemberId)
    );
    group.leave(&second, &counts(12)).expect("leave");
    assert_eq!(
        group
            .check_commit(&second, generation, &theirs)
            .map_err(|e| e.code),
        Err(ErrorCode::UnknownMemberId)
    );
    group.leave(&first, &counts(12)).expect("leave");
    assert_eq!(group.state(), GroupState::Empty);
    assert_eq!(group.check_commit("", 0, &mine), Ok(()));
}

#[test]
fn a_static_member_that_comes_back_keeps_its_partitions_without_a_rebalance() {
    let now = Instant::now();
    let mut group = Group::new("g");
    let mut ids = Ids(0);
    let mut static_request = request(Strategy::CooperativeSticky);
    static_request.instance_id = Some("worker-1".into());
    let id = ids.next();
    let old = group
        .join(static_request.clone(), now, &counts(12), || id)
        .expect("join");
    join(&mut group, &mut ids, Strategy::CooperativeSticky, now);
    settle(&mut group, now);
    let target = group.members[&old].target.clone();
    let generation = group.generation;
    // The process restarts: a new join with the same instance id.
    let id = ids.next();
    let new = group
        .join(static_request, now, &counts(12), || id)
        .expect("rejoin");
    assert_ne!(new, old);
    assert_eq!(group.generation, generation, "no rebalance");
    let outcome = group
        .heartbeat(
            &new,
            generation,
            BTreeSet::new(),
            group.members[&new].handed_seq,
            now,
            &counts(12),
        )
        .expect("heartbeat");
    assert_eq!(outcome.assignment, target);
    assert!(outcome.settled);
    let error = group
        .heartbeat(&old, generation, target, 0, now, &counts(12))
        .expect_err("fenced");
    assert_eq!(error.code, ErrorCode::FencedInstanceId);
}

#[test]
fn a_member_with_another_strategy_is_refused() {
    let now = Instant::now();
    let mut group = Group::new("g");
    let mut ids = Ids(0);
    join(&mut group, &mut ids, Strategy::CooperativeSticky, now);
    let error = group
        .join(request(Strategy::Range), now, &counts(12), || "x".into())
        .expect_err("inconsistent");
    assert_eq!(error.code, ErrorCode::InconsistentGroupProtocol);
}

#[test]
fn more_partitions_start_a_rebalance_that_hands_them_out() {
    let now = Instant::now();
    let mut group = Group::new("g");
    let mut ids = Ids(0);
    let first = join(&mut group, &mut ids, Strategy::CooperativeSticky, now);
    settle(&mut group, now);
    let generation = group.generation;
    let owned = group.members[&first].owned.clone();
    let outcome = group
        .heartbeat(
            &first,
            generation,
            owned,
            group.members[&first].handed_seq,
            now,
            &counts(16),
        )
        .expect("heartbeat");
    assert!(group.generation > generation);
    assert_eq!(outcome.assignment.len(), 16);
}

#[test]
fn partitions_handed_but_not_yet_reported_count_as_owned() {
    let now = Instant::now();
    let mut group = Group::new("g");
    let mut ids = Ids(0);
    let first = join(&mut group, &mut ids, Strategy::CooperativeSticky, now);
    // The first member is handed everything but has not acted on it yet.
    let handed = group
        .heartbeat(
            &first,
            group.generation,
            BTreeSet::new(),
            0,
            now,
            &counts(12),
        )
        .expect("heartbeat");
    assert_eq!(handed.assignment.len(), 12);
    let second = join(&mut group, &mut ids, Strategy::CooperativeSticky, now);
    // A report about an older assignment (owning nothing yet) does not free anything.
    group
        .heartbeat(
            &first,
            group.generation,
            BTreeSet::new(),
            0,
            now,
            &counts(12),
        )
        .expect("heartbeat");
    let outcome = group
        .heartbeat(
            &second,
            group.generation,
            BTreeSet::new(),
            0,
            now,
            &counts(12),
        )
        .expect("heartbeat");
    assert!(
        outcome.assignment.is_empty(),
        "handed to the first member, maybe taken: {outcome:?}"
    );
    // Once the first member acts on its latest assignment, the moved half is free.
    let latest = group.members[&first].handed.clone();
    let seq = group.members[&first].handed_seq;
    group
        .heartbeat(&first, group.generation, latest, seq, now, &counts(12))
        .expect("heartbeat");
    let outcome = group
        .heartbeat(
            &second,
            group.generation,
            BTreeSet::new(),
            0,
            now,
            &counts(12),
        )
        .expect("heartbeat");
    assert_eq!(outcome.assignment.len(), 6);
}
