use super::Strategy::{CooperativeSticky as Sticky, Range, RoundRobin};
use super::{assign, MemberInput, Strategy as Assignor, TopicPartition};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

type Assignment = BTreeMap<String, BTreeSet<TopicPartition>>;
type Counts = BTreeMap<String, u32>;

const ASSIGNORS: [Assignor; 3] = [Range, RoundRobin, Sticky];
/// Topic names proptests draw from; some are left out of the partition counts.
const TOPIC_NAMES: [&str; 5] = ["t0", "t1", "t2", "t3", "t4"];
const PROPTEST_MEMBERS_MAX: usize = 8;
const PROPTEST_PARTITIONS_PER_TOPIC_MAX: u32 = 12;
const SCALE_MEMBERS: usize = 10_000;
const SCALE_TOPICS: usize = 100;
const SCALE_PARTITIONS_PER_TOPIC: u32 = 1_000;
/// Generous: the test runs unoptimized on a shared machine.
const SCALE_SECONDS_MAX: f64 = 10.0;

/// An owned member that `MemberInput`s borrow from.
#[derive(Clone, Debug, Default)]
struct TestMember {
    member_id: String,
    instance_id: Option<String>,
    topics: BTreeSet<String>,
    previous: BTreeSet<TopicPartition>,
}

fn input(member: &TestMember) -> MemberInput<'_> {
    MemberInput {
        member_id: &member.member_id,
        instance_id: member.instance_id.as_deref(),
        topics: &member.topics,
        previous: &member.previous,
    }
}

fn run(assignor: Assignor, members: &[TestMember], counts: &Counts) -> Assignment {
    let inputs: Vec<MemberInput<'_>> = members.iter().map(input).collect();
    assign(assignor, &inputs, counts)
}

/// The two halves of `word` around `separator`.
fn pair(word: &str, separator: char) -> (&str, &str) {
    word.split_once(separator).unwrap_or((word, ""))
}

/// A member from `"id: topic topic <- topic/partition topic/partition"`.
fn member(spec: &str) -> TestMember {
    let (subscription, previous) = spec.split_once("<-").unwrap_or((spec, ""));
    let (member_id, topics) = pair(subscription, ':');
    let claim = |(topic, p): (&str, &str)| (topic.to_owned(), p.parse().expect("index"));
    let previous = previous.split_whitespace();
    TestMember {
        member_id: member_id.trim().to_owned(),
        topics: topics.split_whitespace().map(str::to_owned).collect(),
        previous: previous.map(|word| claim(pair(word, '/'))).collect(),
        ..TestMember::default()
    }
}

/// Partition counts from `"topic=count topic=count"`.
fn counts(spec: &str) -> Counts {
    let count = |(name, n): (&str, &str)| (name.to_owned(), n.parse().expect("count"));
    let words = spec.split_whitespace();
    words.map(|word| count(pair(word, '='))).collect()
}

/// `assignor`'s assignment as `"id: topic/partition topic/partition"` per member.
fn shown(assignor: Assignor, member_specs: &[&str], counts_spec: &str) -> Vec<String> {
    let members: Vec<TestMember> = member_specs.iter().map(|spec| member(spec)).collect();
    let assignment = run(assignor, &members, &counts(counts_spec));
    let show = |(id, owned): (&String, &BTreeSet<TopicPartition>)| {
        let owned: Vec<String> = owned.iter().map(|(t, p)| format!(" {t}/{p}")).collect();
        format!("{id}:{}", owned.concat())
    };
    assignment.iter().map(show).collect()
}

/// Members in assignment order (ids must be unique).
fn ordered(members: &[TestMember]) -> Vec<&TestMember> {
    let mut ordered: Vec<&TestMember> = members.iter().collect();
    ordered.sort_by_key(|m| (m.instance_id.as_ref().unwrap_or(&m.member_id), &m.member_id));
    ordered
}

fn assert_every_partition_once_to_a_subscriber(
    members: &[TestMember],
    counts: &Counts,
    assignment: &Assignment,
) {
    let mut subscriptions: BTreeMap<&String, BTreeSet<&String>> = BTreeMap::new();
    for member in members {
        let topics = subscriptions.entry(&member.member_id).or_default();
        topics.extend(&member.topics);
    }
    let ids_match = assignment.keys().eq(subscriptions.keys().copied());
    assert!(ids_match, "{assignment:?}");
    let mut unassigned: BTreeSet<(&String, u32)> = BTreeSet::new();
    for (topic, &count) in counts {
        if subscriptions.values().any(|topics| topics.contains(topic)) {
            unassigned.extend((0..count).map(|partition| (topic, partition)));
        }
    }
    for (member_id, owned) in assignment {
        for (topic, partition) in owned {
            let subscribed = subscriptions[member_id].contains(topic);
            assert!(subscribed, "{member_id}: {topic}");
            let first_time = unassigned.remove(&(topic, *partition));
            assert!(first_time, "{topic}/{partition} again, to {member_id}");
        }
    }
    assert!(unassigned.is_empty(), "{unassigned:?} unassigned");
}

fn assert_counts_within_one(assignment: &Assignment) {
    let sizes: BTreeSet<usize> = assignment.values().map(BTreeSet::len).collect();
    let spread = sizes.last().zip(sizes.first()).map(|(max, min)| max - min);
    assert!(spread.unwrap_or(0) <= 1, "{sizes:?}");
}

/// Still-valid previous partitions, a contested one going to the first member in order.
fn claims(members: &[TestMember], counts: &Counts) -> Assignment {
    let mut taken = BTreeSet::new();
    let mut claims = Assignment::new();
    for member in ordered(members) {
        let valid = |(topic, partition): &&TopicPartition| {
            member.topics.contains(topic) && counts.get(topic).is_some_and(|n| partition < n)
        };
        let claimed = member.previous.iter().filter(valid).cloned();
        let claimed = claimed.filter(|claim| taken.insert(claim.clone()));
        claims.insert(member.member_id.clone(), claimed.collect());
    }
    claims
}

/// Previously owned partitions whose owner changed.
fn moved(before: &Assignment, after: &Assignment) -> BTreeSet<TopicPartition> {
    let mut moved = BTreeSet::new();
    for (member_id, owned) in before {
        let now = after.get(member_id).cloned().unwrap_or_default();
        moved.extend(owned.difference(&now).cloned());
    }
    moved
}

/// Every subscribed partition dealt in turn from `members[first]`: balanced, with the
/// larger counts wherever `first` puts them. Subscriptions must be uniform.
fn dealt(members: &[TestMember], counts: &Counts, first: usize) -> Assignment {
    let mut dealt = Assignment::new();
    for member in members {
        dealt.insert(member.member_id.clone(), BTreeSet::new());
    }
    let partitions = run(Range, members, counts).into_values().flatten();
    for (index, partition) in partitions.enumerate() {
        let owner = &members[(first + index) % members.len()].member_id;
        dealt.entry(owner.clone()).or_default().insert(partition);
    }
    dealt
}

fn with_previous(members: &[TestMember], assignment: &Assignment) -> Vec<TestMember> {
    let mut members = members.to_vec();
    for member in &mut members {
        let previous = assignment.get(&member.member_id);
        member.previous = previous.cloned().unwrap_or_default();
    }
    members
}

fn arb_topic() -> impl Strategy<Value = String> {
    prop::sample::select(TOPIC_NAMES.to_vec()).prop_map(str::to_owned)
}

fn arb_counts() -> impl Strategy<Value = Counts> {
    let count = 0..=PROPTEST_PARTITIONS_PER_TOPIC_MAX;
    prop::collection::btree_map(arb_topic(), count, 0..TOPIC_NAMES.len())
}

/// Members whose ids may repeat; previous partitions may be invalid or contested.
fn arb_members() -> impl Strategy<Value = Vec<TestMember>> {
    let partition = 0..PROPTEST_PARTITIONS_PER_TOPIC_MAX + 2;
    let previous = prop::collection::btree_set((arb_topic(), partition), 0..10);
    let topics = prop::collection::btree_set(arb_topic(), 0..TOPIC_NAMES.len());
    let member_id = (0..10_u32).prop_map(|index| format!("m{index}"));
    let instance_id = prop::option::of((0..4_u32).prop_map(|index| format!("s{index}")));
    let member = (member_id, instance_id, topics, previous);
    let member = member.prop_map(|(member_id, instance_id, topics, previous)| TestMember {
        member_id,
        instance_id,
        topics,
        previous,
    });
    prop::collection::vec(member, 0..PROPTEST_MEMBERS_MAX)
}

/// Members with unique ids; if `uniform`, all subscribe to the first member's topics.
fn arb_group(uniform: bool) -> impl Strategy<Value = (Vec<TestMember>, Counts)> {
    (arb_members(), arb_counts()).prop_map(move |(mut members, counts)| {
        let topics = members
            .first()
            .map(|m| m.topics.clone())
            .unwrap_or_default();
        for (index, member) in members.iter_mut().enumerate() {
            member.member_id = format!("m{index}");
            if uniform {
                member.topics.clone_from(&topics);
            }
        }
        (members, counts)
    })
}

#[test]
fn range_splits_ten_partitions_over_three_members_four_three_three_contiguous() {
    let shown = shown(Range, &["a: t", "b: t", "c: t"], "t=10");
    assert_eq!(
        shown,
        ["a: t/0 t/1 t/2 t/3", "b: t/4 t/5 t/6", "c: t/7 t/8 t/9"]
    );
}

#[test]
fn range_orders_static_members_by_instance_id() {
    let mut members = [member("a: t"), member("b: t")];
    members[0].instance_id = Some("z".to_owned());
    let owned_by_b = &run(Range, &members, &counts("t=3"))["b"];
    assert!(owned_by_b.contains(&("t".to_owned(), 0)), "{owned_by_b:?}");
}

#[test]
fn round_robin_deals_two_topics_in_turn() {
    let shown = shown(RoundRobin, &["a: t0 t1", "b: t0 t1"], "t0=3 t1=2");
    assert_eq!(shown, ["a: t0/0 t0/2 t1/1", "b: t0/1 t1/0"]);
}

#[test]
fn round_robin_skips_members_not_subscribed_to_the_topic() {
    let shown = shown(RoundRobin, &["a: t0 t1", "b: t1", "c: t0"], "t0=3 t1=3");
    assert_eq!(shown, ["a: t0/0 t0/2 t1/1", "b: t1/0 t1/2", "c: t0/1"]);
}

#[test]
fn sticky_keeps_previous_and_gives_a_new_member_only_the_surplus() {
    let members = ["a: t <- t/0 t/1 t/2 t/3", "b: t <- t/4 t/5 t/6 t/7", "c: t"];
    let shown = shown(Sticky, &members, "t=8");
    assert_eq!(shown, ["a: t/0 t/1 t/2", "b: t/4 t/5 t/6", "c: t/3 t/7"]);
}

#[test]
fn sticky_gives_a_contested_partition_to_the_first_member_in_order() {
    let shown = shown(Sticky, &["b: t <- t/0", "a: t <- t/0"], "t=2");
    assert_eq!(shown, ["a: t/0", "b: t/1"]);
}

#[test]
fn sticky_drops_previous_partitions_of_unsubscribed_deleted_or_shrunk_topics() {
    let members = [
        "a: t0 gone cut <- t1/0 gone/0 cut/5",
        "b: t0 t1 cut <- t0/0",
    ];
    let shown = shown(Sticky, &members, "t0=2 t1=1 cut=2");
    assert_eq!(shown, ["a: cut/0 cut/1", "b: t0/0 t0/1 t1/0"]);
}

#[test]
fn sticky_mixed_subscriptions_give_the_shared_topic_to_the_less_loaded() {
    let shown = shown(Sticky, &["a: t0", "b: t0 t1"], "t0=4 t1=4");
    assert_eq!(shown, ["a: t0/0 t0/1 t0/2 t0/3", "b: t1/0 t1/1 t1/2 t1/3"]);
}

#[test]
fn no_members_give_an_empty_assignment() {
    for assignor in ASSIGNORS {
        assert!(shown(assignor, &[], "t=4").is_empty(), "{assignor:?}");
    }
}

#[test]
fn members_without_existing_partitions_get_empty_entries() {
    for assignor in ASSIGNORS {
        let shown = shown(assignor, &["idle", "empty: zero missing"], "zero=0 t=3");
        assert_eq!(shown, ["empty:", "idle:"], "{assignor:?}");
    }
}

#[test]
fn duplicate_member_ids_merge_into_one_member() {
    let members = [member("a: t0"), member("b: t0"), member("a: t1")];
    let reversed: Vec<TestMember> = members.iter().rev().cloned().collect();
    let counts = counts("t0=4 t1=2");
    for assignor in ASSIGNORS {
        let assignment = run(assignor, &members, &counts);
        assert_every_partition_once_to_a_subscriber(&members, &counts, &assignment);
        let again = run(assignor, &reversed, &counts);
        assert_eq!(assignment, again, "{assignor:?}");
    }
}

#[test]
fn ten_thousand_members_and_a_hundred_thousand_partitions_assign_quickly() {
    let topics: Vec<String> = (0..SCALE_TOPICS).map(|index| format!("t{index}")).collect();
    let count = |topic: &String| (topic.clone(), SCALE_PARTITIONS_PER_TOPIC);
    let counts: Counts = topics.iter().map(count).collect();
    for mixed in [false, true] {
        let member = |index: usize| {
            let every = if mixed { 1 + index % 4 } else { 1 };
            let topics = topics.iter().step_by(every).cloned().collect();
            TestMember {
                member_id: format!("m{index}"),
                topics,
                ..TestMember::default()
            }
        };
        let members: Vec<TestMember> = (0..SCALE_MEMBERS).map(member).collect();
        for assignor in ASSIGNORS {
            let started = std::time::Instant::now();
            let first = run(assignor, &members, &counts);
            let mut grown = with_previous(&members, &first);
            grown.push(member(SCALE_MEMBERS));
            let second = run(assignor, &grown, &counts);
            let seconds = started.elapsed().as_secs_f64();
            assert!(
                seconds < SCALE_SECONDS_MAX,
                "{assignor:?} {mixed}: {seconds}s"
            );
            assert_every_partition_once_to_a_subscriber(&grown, &counts, &second);
        }
    }
}

proptest! {
    #[test]
    fn every_partition_goes_once_to_a_subscriber(
        (members, counts) in (arb_members(), arb_counts()),
    ) {
        for assignor in ASSIGNORS {
            let assignment = run(assignor, &members, &counts);
            assert_every_partition_once_to_a_subscriber(&members, &counts, &assignment);
        }
    }

    #[test]
    fn member_order_in_the_input_does_not_change_the_output(
        (members, shuffled, counts) in (arb_members(), arb_counts()).prop_flat_map(
            |(members, counts)| {
                (Just(members.clone()), Just(members).prop_shuffle(), Just(counts))
            }
        ),
    ) {
        for assignor in ASSIGNORS {
            let assignment = run(assignor, &members, &counts);
            prop_assert_eq!(assignment, run(assignor, &shuffled, &counts));
        }
    }

    #[test]
    fn range_gives_subscribers_in_order_contiguous_blocks_first_ones_longer(
        (members, counts) in arb_group(false),
    ) {
        let assignment = run(Range, &members, &counts);
        for (topic, &count) in &counts {
            let subscribed = |m: &&TestMember| m.topics.contains(topic);
            let subscribers: Vec<&TestMember> =
                ordered(&members).into_iter().filter(subscribed).collect();
            let (mut next, n) = (0, subscribers.len() as u32);
            for (rank, subscriber) in (0..).zip(&subscribers) {
                let block = next..next + count / n + u32::from(rank < count % n);
                let owned = assignment[&subscriber.member_id].iter();
                let owned = owned.filter(|(t, _)| t == topic);
                let expected = block.clone().map(|partition| (topic.clone(), partition));
                prop_assert!(owned.cloned().eq(expected), "{topic} {block:?}: {assignment:?}");
                next = block.end;
            }
        }
    }

    #[test]
    fn round_robin_matches_dealing_around_the_member_ring(
        (members, counts) in arb_group(false),
    ) {
        let ring = ordered(&members);
        let mut expected: Assignment =
            ring.iter().map(|m| (m.member_id.clone(), BTreeSet::new())).collect();
        let mut cursor = 0;
        for (topic, &count) in &counts {
            if !ring.iter().any(|m| m.topics.contains(topic)) {
                continue;
            }
            for partition in 0..count {
                while !ring[cursor % ring.len()].topics.contains(topic) {
                    cursor += 1;
                }
                let owner = &ring[cursor % ring.len()].member_id;
                expected.entry(owner.clone()).or_default().insert((topic.clone(), partition));
                cursor += 1;
            }
        }
        prop_assert_eq!(run(RoundRobin, &members, &counts), expected);
    }

    #[test]
    fn round_robin_and_sticky_balance_uniform_subscriptions_within_one(
        (members, counts) in arb_group(true),
    ) {
        let no_previous = with_previous(&members, &Assignment::new());
        assert_counts_within_one(&run(RoundRobin, &members, &counts));
        assert_counts_within_one(&run(Sticky, &members, &counts));
        assert_counts_within_one(&run(Sticky, &no_previous, &counts));
    }

    #[test]
    fn sticky_keeps_every_valid_claim_unless_above_its_floor_or_ceil_quota(
        (members, counts) in arb_group(true),
    ) {
        let assignment = run(Sticky, &members, &counts);
        let total: usize = assignment.values().map(BTreeSet::len).sum();
        let quota_floor = total / members.len().max(1);
        for (member_id, claimed) in claims(&members, &counts) {
            let owned = &assignment[&member_id];
            let kept = claimed.intersection(owned).count();
            prop_assert!(owned.len() == quota_floor || owned.len() == quota_floor + 1);
            prop_assert_eq!(kept, claimed.len().min(owned.len()), "{:?} {:?}", claimed, owned);
        }
    }

    #[test]
    fn sticky_adding_a_member_to_a_balanced_group_moves_at_most_a_fair_share_all_to_it(
        (members, counts) in arb_group(true),
        first in any::<prop::sample::Index>(),
        instance_id in prop::option::of("[a-z]{1,3}"),
    ) {
        prop_assume!(!members.is_empty());
        let balanced = dealt(&members, &counts, first.index(members.len()));
        let mut grown = with_previous(&members, &balanced);
        let topics = members[0].topics.clone();
        grown.push(TestMember { instance_id, topics, ..member("new") });
        let after = run(Sticky, &grown, &counts);
        let total: usize = after.values().map(BTreeSet::len).sum();
        let moved = moved(&balanced, &after);
        prop_assert!(moved.len() <= total.div_ceil(grown.len()), "{:?} {:?}", moved, after);
        prop_assert!(moved.is_subset(&after["new"]), "{:?} {:?}", moved, after);
    }

    #[test]
    fn sticky_removing_a_member_from_a_balanced_group_moves_only_its_partitions(
        (members, counts) in arb_group(true),
        first in any::<prop::sample::Index>(),
        leaving in any::<prop::sample::Index>(),
    ) {
        prop_assume!(!members.is_empty());
        let before = dealt(&members, &counts, first.index(members.len()));
        let mut shrunk = with_previous(&members, &before);
        let left = shrunk.remove(leaving.index(shrunk.len()));
        let moved = moved(&before, &run(Sticky, &shrunk, &counts));
        let only_its = moved.is_subset(&before[&left.member_id]);
        prop_assert!(only_its, "{} left: {:?}", left.member_id, moved);
    }
}
