def mean(values):
    if not values:
        raise ValueError("mean of an empty list")
    return sum(values) / len(values)


def median(values):
    ordered = sorted(values)
    n = len(ordered)
    middle = n // 2
    if n % 2 == 1:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def variance(values):
    m = mean(values)
    return sum((x - m) ** 2 for x in values) / len(values)


def clamp(value, low, high):
    return max(low, min(value, high))
